"""The real model (slow): short LoRA and prompt-tuning SFT runs of SmolLM2-135M-Instruct through the CLI lower
the loss on the shipped instruction set, and each adapter, loaded back onto the base model by a second run,
gives the same eval loss.

Needs models/smollm2-135m (tools/get_smollm2.sh) or MINDTUNE_SMOLLM2_DIR. Run: pytest -m slow tests/peft
"""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.environ.get("MINDTUNE_SMOLLM2_DIR", os.path.join(REPO, "models", "smollm2-135m"))
STEPS = 16

pytestmark = pytest.mark.slow


def _cli(*args):
    proc = subprocess.run([sys.executable, "-m", "mindtune.cli", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("config, overrides", [
    ("run_configs/smollm2-135m/sft_lora.yaml", []),
    ("run_configs/smollm2-135m/sft_prompt.yaml", []),
])
def test_short_run_lowers_the_loss_and_the_adapter_reloads(config, overrides, tmp_path):
    if not os.path.isfile(os.path.join(MODEL, "mindtune_model.json")):
        pytest.skip(f"SmolLM2 model directory not found at {MODEL}: run tools/get_smollm2.sh "
                    "(or set MINDTUNE_SMOLLM2_DIR)")
    common = [f"model.path={MODEL}", "data.max_length=64", "train.batch_size=4", "train.eval_every=0",
              "train.log_every=1", "data.eval_rows=8"]
    run = tmp_path / "run"
    out = _cli("train", config, f"output_dir={run}", f"train.max_steps={STEPS}", f"train.save_every={STEPS}",
               *common, *overrides)
    assert "trainable parameters" in out
    rows = _metrics(run)
    losses = [r["loss"] for r in rows if "loss" in r]
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    print(f"{config}: loss {first:.4f} (first 4 steps) -> {last:.4f} (last 4), eval {rows[-1]['eval_loss']:.4f}")
    assert last < first - 0.05, (first, last)
    adapter = run / "model"
    size = os.path.getsize(adapter / "adapter.safetensors")
    assert size < 8_000_000, size                        # adapter only: the base model is 538 MB
    # load the adapter onto the base model in a new process; lr 0 keeps it as it is while the run evaluates
    again = tmp_path / "again"
    _cli("train", config, f"output_dir={again}", f"model.path={adapter}", "train.max_steps=1", "train.lr=0",
         "train.warmup_steps=0", *common[1:], *overrides)
    reloaded = _metrics(again)[-1]["eval_loss"]
    print(f"{config}: adapter reloaded, eval loss {reloaded:.5f} (end of training {rows[-1]['eval_loss']:.5f})")
    assert abs(reloaded - rows[-1]["eval_loss"]) <= 1e-4 * rows[-1]["eval_loss"]
