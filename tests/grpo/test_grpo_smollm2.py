"""LoRA GRPO on the real SmolLM2-135M-Instruct with the exact_match rule on capitals ("Reply with the city name
only."): the model knows many capitals but often answers in a sentence. Runs run_configs/smollm2-135m/grpo_lora.yaml
as shipped:
    pytest -m slow tests/grpo/test_grpo_smollm2.py
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


def test_lora_grpo_raises_held_out_exact_match(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    out = tmp_path / "run"
    assert main(["train", "run_configs/smollm2-135m/grpo_lora.yaml", f"output_dir={out}",
                 f"model.path={MODEL}"]) == 0
    stats = json.load(open(out / "model" / "mindtune_model.json"))["grpo"]
    print("SmolLM2 LoRA GRPO:", json.dumps(stats))
    assert stats["eval_reward"] > stats["initial_eval_reward"], stats
