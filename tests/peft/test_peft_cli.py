"""The SFT stage end to end with prefix tuning (the method whose saved adapter differs most from what it trains):
the run reports its trainable/total parameters and writes only the folded prefixes; a second run with
`model.path` = that adapter rebuilds the base model, loads the prefixes and evaluates to the same loss."""
import json
import os
import subprocess
import sys

from safetensors.numpy import load_file

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ASSETS = os.path.join(REPO, "mindtune", "assets")
CONFIG = f"""stage: sft
seed: 3
model: {{path: tiny}}
data: {{train: {ASSETS}/demo_sft_train.jsonl, eval: {ASSETS}/demo_sft_eval.jsonl, max_length: 32, eval_rows: 8}}
train: {{batch_size: 4, max_steps: 6, lr: 1.0e-2, log_every: 1, save_every: 6, resume: never}}
peft: {{method: prefix, num_virtual_tokens: 4, encoder_hidden_size: 32}}
"""


def _cli(*args):
    proc = subprocess.run([sys.executable, "-m", "mindtune.cli", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=900, env=dict(os.environ, MINDTUNE_NO_PROGRESS="1"))
    return proc.returncode, proc.stdout, proc.stderr


def _last(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f][-1]


def test_prefix_sft_saves_folded_prefixes_that_reload_to_the_same_eval_loss(tmp_path):
    config = tmp_path / "prefix.yaml"
    config.write_text(CONFIG)
    code, out, err = _cli("train", config, f"output_dir={tmp_path / 'run'}")
    assert code == 0, err[-2000:]
    # MLP: embedding 4x64 + linear 64->32 + linear 32->128 (2 layers x key/value x 2 kv heads x 16) = 6,560;
    # the tiny base has 106,816 parameters
    assert "peft=prefix, trainable parameters 6,560 / 113,376 (5.786%)" in out
    tensors = load_file(str(tmp_path / "run" / "model" / "adapter.safetensors"))
    assert {k: v.shape for k, v in tensors.items()} == {"peft.prefix_kv": (2, 2, 2, 4, 16)}
    with open(tmp_path / "run" / "model" / "mindtune_model.json", encoding="utf-8") as f:
        meta = json.load(f)
    assert meta["format"] == "mindtune-adapter" and meta["base_model"] == "tiny" and meta["peft"]["method"] == "prefix"

    code, out, err = _cli("train", config, f"output_dir={tmp_path / 'again'}", f"model.path={tmp_path / 'run' / 'model'}",
                          "train.max_steps=1", "train.lr=0", "train.save_every=0")
    assert code == 0, err[-2000:]
    assert "trainable parameters 512 /" in out     # continuing on the plain, folded prefixes
    first, again = _last(tmp_path / "run")["eval_loss"], _last(tmp_path / "again")["eval_loss"]
    assert abs(first - again) <= 1e-5 * first, (first, again)

    code, _, err = _cli("train", config, f"output_dir={tmp_path / 'bad'}", f"model.path={tmp_path / 'run' / 'model'}",
                        "peft.method=lora")
    assert code == 2 and "peft.method: 'lora' but" in err and "'prefix' adapter" in err
