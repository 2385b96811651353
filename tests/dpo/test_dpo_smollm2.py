"""LoRA DPO on the real SmolLM2-135M-Instruct: a preference the model does not have (of two correct answers, the
one that mentions a bluebird). Runs run_configs/smollm2-135m/dpo_lora.yaml as shipped:
    pytest -m slow tests/dpo/test_dpo_smollm2.py
The model directory comes from tools/get_smollm2.sh (models/smollm2-135m; MINDTUNE_SMOLLM2_DIR overrides it).
"""
import json
import os

import pytest

from mindtune.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.environ.get("MINDTUNE_SMOLLM2_DIR") or os.path.join(REPO, "models", "smollm2-135m")

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.path.isfile(os.path.join(MODEL, "mindtune_model.json")),
                                 reason=f"{MODEL} is absent: run tools/get_smollm2.sh")]


def test_lora_dpo_teaches_smollm2_the_bluebird_preference(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)   # the config names its data files relative to the repository root
    out = tmp_path / "run"
    assert main(["train", "run_configs/smollm2-135m/dpo_lora.yaml", f"output_dir={out}", f"model.path={MODEL}"]) == 0
    stats = json.load(open(out / "model" / "mindtune_model.json"))["dpo"]
    print("SmolLM2 LoRA DPO:", json.dumps(stats))
    assert stats["eval_accuracy"] >= 0.9
    assert stats["eval_logp_accuracy"] >= stats["initial_logp_accuracy"] + 0.3, stats
