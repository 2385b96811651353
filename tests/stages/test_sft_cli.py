"""The SFT stage through the real CLI on a tiny model: training, outputs, resume, crash safety, fp16."""
import json
import os
import re

import numpy as np
import pytest

from mindtune.engine.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from mindtune.engine.metrics import read_metrics

CONFIG = """\
stage: sft
seed: 1
model: {{path: tiny}}
data:
  train: {assets}/demo_sft_train.jsonl
  eval: {assets}/demo_sft_eval.jsonl
  max_length: 48
train: {{batch_size: 4, max_steps: 30, lr: 3.0e-3, warmup_steps: 2, log_every: 1, save_every: 10}}
peft: {{method: none}}
"""


@pytest.fixture(scope="module")
def config_file(tmp_path_factory, assets):
    path = tmp_path_factory.mktemp("cfg") / "sft.yaml"
    path.write_text(CONFIG.format(assets=assets))
    return str(path)


def train(cli, config_file, out, *overrides, env=None):
    code, stdout, stderr = cli("train", config_file, f"output_dir={out}", *overrides, env=env)
    return code, stdout, stderr


def losses(run_dir):
    return [row["loss"] for row in read_metrics(os.path.join(run_dir, "metrics.jsonl"))]


def test_loss_falls_and_run_directory_is_complete(cli, config_file, tmp_path):
    out = tmp_path / "run"
    code, stdout, stderr = train(cli, config_file, out)
    assert code == 0, stderr
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 31))
    first, last = rows[0]["loss"], np.mean([r["loss"] for r in rows[-5:]])
    assert last < first - 1.0, (first, last)
    for key in ("lr", "grad_norm", "tokens_per_s", "loss_scale", "label_tokens"):
        assert key in rows[0]
    assert "eval_loss" in rows[-1] and rows[-1]["eval_loss"] < first
    assert (out / "config.yaml").is_file()
    assert (out / "model" / "model.safetensors").is_file() and (out / "model" / "tokenizer.json").is_file()
    assert [s for s, _ in list_checkpoints(str(out))] == [20, 30]  # save_total_limit 2
    assert "loss:" in stdout and "tokens/s" in stdout and str(out) in stdout
    # the bucket lengths planned from the run's batches, and every training graph compiled at one of them
    planned = re.search(r"sft: batches run at ([\d, ]+) tokens \(train.length_buckets=3, planned from the run's "
                        r"batches; 48 for any other\)", stdout)
    assert planned, stdout
    lengths = [int(n) for n in planned.group(1).split(", ")]
    assert 1 <= len(lengths) <= 3 and all(n % 8 == 0 and n < 48 for n in lengths), lengths
    compiled = {int(n) for n in re.findall(r"compiling the training step for batches of 4x(\d+)", stderr)}
    assert compiled and compiled <= set(lengths), (compiled, lengths)


def test_resume_after_kill_reproduces_the_uninterrupted_run(cli, config_file, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    args = ("train.max_steps=20", "peft.method=lora", "train.lr=1.0e-2")
    assert train(cli, config_file, straight, *args)[0] == 0
    # A hard kill right after the step-10 checkpoint, then the same command again.
    code, _, _ = train(cli, config_file, resumed, *args, env={"MINDTUNE_KILL_AT": "after_save:10"})
    assert code != 0
    assert latest_checkpoint(str(resumed))[0] == 10
    code, stdout, stderr = train(cli, config_file, resumed, *args)
    assert code == 0, stderr
    assert "resumed from step 10" in stdout
    a, b = read_metrics(straight / "metrics.jsonl"), read_metrics(resumed / "metrics.jsonl")
    assert [r["step"] for r in b] == list(range(1, 21))
    assert abs(a[19]["loss"] - b[19]["loss"]) <= 1e-5
    for ra, rb in zip(a, b):
        for key in ("loss", "lr", "grad_norm", "eval_loss"):
            if key in ra:
                assert rb[key] == pytest.approx(ra[key], rel=1e-5, abs=1e-6), (ra["step"], key)


def test_kill_during_checkpoint_write_keeps_the_previous_one(cli, config_file, tmp_path):
    out = tmp_path / "run"
    code, _, _ = train(cli, config_file, out, "train.max_steps=20", env={"MINDTUNE_KILL_AT": "in_save:20"})
    assert code != 0
    step, path = latest_checkpoint(str(out))
    assert step == 10
    tensors, state = load_checkpoint(path)
    assert state["step"] == 10 and all(np.isfinite(v).all() for v in tensors.values())
    assert any(name.startswith(".step_000020") for name in os.listdir(out / "checkpoints"))  # the torn write
    code, stdout, stderr = train(cli, config_file, out, "train.max_steps=20")
    assert code == 0, stderr
    assert [s for s, _ in list_checkpoints(str(out))] == [10, 20]
    assert not any(name.startswith(".") for name in os.listdir(out / "checkpoints"))


def test_fp16_loss_scaling_skips_overflowed_steps(cli, config_file, tmp_path):
    out = tmp_path / "fp16"
    code, stdout, stderr = train(cli, config_file, out, "train.precision=fp16", "train.loss_scale=1048576",
                                 "train.max_steps=16", "train.loss_scale_window=4")
    assert code == 0, stderr
    rows = read_metrics(out / "metrics.jsonl")
    skipped = [r["step"] for r in rows if r["skipped"]]
    assert skipped and skipped[0] == 1                          # a scale of 2^20 overflows fp16 gradients
    scales = [r["loss_scale"] for r in rows]
    assert scales[1] == scales[0] / 2                           # halved after the overflow
    assert all(np.isfinite(r["loss"]) for r in rows)
    assert all(r["grad_norm"] is None for r in rows if r["skipped"])  # strict JSON: null, not NaN
    applied = [r for r in rows if not r["skipped"]]
    assert applied and applied[-1]["loss"] < rows[0]["loss"]    # later steps do train
    from safetensors.numpy import load_file
    weights = load_file(str(out / "model" / "model.safetensors"))
    assert all(np.isfinite(v).all() for v in weights.values())


def test_resume_never_refuses_a_used_directory(cli, config_file, tmp_path):
    out = tmp_path / "used"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    code, _, stderr = train(cli, config_file, out, "train.resume=never")
    assert code == 2 and "not empty" in stderr
    assert sorted(os.listdir(out)) == ["notes.txt"]


def test_training_continues_from_an_adapter_of_a_resized_preset(cli, config_file, tmp_path):
    """An adapter directory is a valid model.path, also when its base is a preset with model.spec overrides."""
    first, second = tmp_path / "first", tmp_path / "second"
    args = ("peft.method=lora", "train.max_steps=3", "model.spec={num_layers: 3, hidden_size: 96, num_heads: 4, "
            "num_kv_heads: 2, intermediate_size: 160}")
    assert train(cli, config_file, first, *args)[0] == 0
    code, stdout, stderr = train(cli, config_file, second, "peft.method=lora", "train.max_steps=3",
                                 f"model.path={first / 'model'}", "model.spec={}")
    assert code == 0, stderr
    meta = json.loads((second / "model" / "mindtune_model.json").read_text())
    assert meta["format"] == "mindtune-adapter" and meta["base_model"] == "tiny" and meta["spec"]["num_layers"] == 3


def test_packing_keeps_the_loss_of_every_token(cli, config_file, tmp_path):
    """Packed rows give the evaluation loss of the same rows unpacked (lr 0: the model stays as loaded), and the
    packed run trains on full-length sequences only: one compiled shape for the training step."""
    args = ("train.max_steps=2", "train.lr=0", "train.warmup_steps=0", "peft.method=lora")
    code, _, stderr = train(cli, config_file, tmp_path / "padded", *args)
    assert code == 0, stderr
    code, stdout, stderr = train(cli, config_file, tmp_path / "packed", *args, "data.packing=true")
    assert code == 0, stderr
    # 167 rows of 19-45 tokens: best-fit decreasing puts at most two in a 48-token sequence
    packed = re.search(r"sft: packed 167 rows into (\d+) sequences of 48 tokens \((\d+\.\d)% of positions hold a "
                       r"token\)", stdout)
    assert packed and 84 <= int(packed.group(1)) < 167, stdout
    padded_eval = read_metrics(tmp_path / "padded" / "metrics.jsonl")[-1]["eval_loss"]
    packed_eval = read_metrics(tmp_path / "packed" / "metrics.jsonl")[-1]["eval_loss"]
    assert abs(packed_eval - padded_eval) < 1e-5, (packed_eval, padded_eval)
    compiled = re.findall(r"compiling the training step for batches of 4x(\d+)", stderr)
    assert compiled == ["48"] and "batches run at" not in stdout, (compiled, stdout)
