"""PPO with LoRA on the real SmolLM2-135M-Instruct raises the held-out score of the bluebird reward model (trained
by the RM stage: of two correct answers it prefers the one that mentions a bluebird), with a bounded KL to the
starting model. The prompts ask for a bird that is blue or another colour, so the instruct model names a blue bird
in about half of its samples and PPO can reinforce it (held out: other combinations of the same questions and
colours). Measured: +1.0 to +2.0 over two seeds and a retrained reward model (docs/ppo.md); the test asks for +0.5.

    pytest -m slow tests/ppo/test_ppo_smollm2.py       (RM ~11 min + PPO 4 iterations ~11 min on 2 CPU cores)
Uses runs/smollm2-rm-lora when it exists (`mindtune train run_configs/smollm2-135m/rm_lora.yaml`), else trains it.
"""
import json
import os

import pytest

from mindtune.cli import main
from mindtune.engine.metrics import read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.environ.get("MINDTUNE_SMOLLM2_DIR") or os.path.join(REPO, "models", "smollm2-135m")
RM = os.path.join(REPO, "runs", "smollm2-rm-lora")

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.path.isfile(os.path.join(MODEL, "mindtune_model.json")),
                                 reason=f"{MODEL} is absent: run tools/get_smollm2.sh")]


def test_ppo_raises_the_bluebird_score_with_a_bounded_kl(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)   # the configs name their data files relative to the repository root
    rm = RM
    if not os.path.isfile(os.path.join(RM, "model", "mindtune_model.json")):
        rm = str(tmp_path / "rm")
        assert main(["train", "run_configs/smollm2-135m/rm_lora.yaml", f"output_dir={rm}",
                     f"model.path={MODEL}"]) == 0
    out = tmp_path / "ppo"
    assert main(["train", "run_configs/smollm2-135m/ppo_lora.yaml", f"output_dir={out}", f"ppo.actor={MODEL}",
                 f"ppo.reward_model={rm}"]) == 0
    rows = read_metrics(out / "metrics.jsonl")
    with open(out / "checkpoints" / sorted(os.listdir(out / "checkpoints"))[-1] / "trainer_state.json") as f:
        before = json.load(f)["stage_state"]["initial_eval"]
    evals = [r for r in rows if "eval_score" in r]
    print("SmolLM2 PPO held-out score:", before["eval_score"], "->", [round(r["eval_score"], 3) for r in evals],
          "KL", [round(r["eval_kl"], 3) for r in evals])
    assert evals[-1]["eval_score"] > before["eval_score"] + 0.5
    assert evals[-1]["eval_kl"] < 10.0
    assert rows[0]["kl"] == 0.0
