"""A LoRA reward model on the real SmolLM2-135M-Instruct learns a rule it cannot know in advance: of two correct
answers, prefer the one that mentions a bluebird over the one that mentions another bird.

Runs run_configs/smollm2-135m/rm_lora.yaml as shipped (about 20-30 min on 2 shared CPU cores):
    pytest -m slow tests/rm/test_rm_smollm2.py
The model directory comes from tools/get_smollm2.sh (models/smollm2-135m; MINDTUNE_SMOLLM2_DIR overrides it).
"""
import json
import os

import pytest

from mindtune.cli import main
from mindtune.engine.metrics import read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.environ.get("MINDTUNE_SMOLLM2_DIR") or os.path.join(REPO, "models", "smollm2-135m")

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.path.isfile(os.path.join(MODEL, "mindtune_model.json")),
                                 reason=f"{MODEL} is absent: run tools/get_smollm2.sh")]


def test_lora_reward_model_learns_the_bluebird_rule(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)   # the config names its data files relative to the repository root
    out = tmp_path / "run"
    assert main(["train", "run_configs/smollm2-135m/rm_lora.yaml", f"output_dir={out}",
                 f"model.path={MODEL}"]) == 0
    meta = json.load(open(out / "model" / "mindtune_model.json"))
    stats = meta["reward_model"]
    print("SmolLM2 LoRA reward model:", json.dumps(stats))
    assert meta["format"] == "mindtune-adapter" and stats["split"] == "data.eval" and stats["pairs"] == 100
    assert stats["accuracy"] >= 0.90, stats
    assert stats["accuracy"] > stats["initial_accuracy"], stats
    assert read_metrics(out / "metrics.jsonl")[-1]["eval_accuracy"] >= 0.90
