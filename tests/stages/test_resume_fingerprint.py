"""Resume refuses a run whose maths changed (batch size, data file, PEFT settings): one line naming the key, exit 2,
nothing in the run directory touched; train.resume_changed=true continues from the checkpoint."""
import hashlib
import json
import os

import pytest

from mindtune.engine.metrics import read_metrics

CONFIG = """\
stage: sft
seed: 1
model: {{path: tiny}}
data: {{train: {train}, max_length: 32}}
train: {{batch_size: 2, max_steps: 2, save_every: 1, lr: 1.0e-3}}
peft: {{method: lora, rank: 4}}
"""


def tree_digest(root) -> dict:
    """{relative path: sha256} of every file under root (contents and names)."""
    found = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return found


@pytest.fixture(scope="module")
def done_run(cli, tmp_path_factory, assets):
    """A finished 2-step LoRA run (checkpoints at steps 1 and 2)."""
    d = tmp_path_factory.mktemp("fp")
    rows = [json.loads(line) for line in open(f"{assets}/demo_sft_train.jsonl")][:16]
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "other.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[::-1]))
    (d / "sft.yaml").write_text(CONFIG.format(train=d / "train.jsonl"))
    code, _, stderr = cli("train", d / "sft.yaml", f"output_dir={d / 'run'}")
    assert code == 0, stderr
    return d


@pytest.mark.parametrize("override, key", [
    ("train.batch_size=4", "train.batch_size (2 -> 4)"),
    ("peft.rank=8", "peft.rank (4 -> 8)"),
    ("data.train={d}/other.jsonl", "data.train contents ("),
])
def test_resume_refuses_a_changed_run(cli, done_run, override, key):
    run = done_run / "run"
    before = tree_digest(run)
    code, _, stderr = cli("train", done_run / "sft.yaml", f"output_dir={run}", "train.max_steps=3",
                          override.format(d=done_run))
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, stderr
    prefix = f"mindtune train: error: train.resume: the checkpoint {run}/checkpoints/step_000002 was made by a " \
             f"different run: {key}"
    assert len(lines) == 1 and lines[0].startswith(prefix), lines
    assert lines[0].endswith("set train.resume_changed=true to continue anyway")
    assert tree_digest(run) == before          # config.yaml, metrics, checkpoints: nothing rewritten


def test_resume_changed_true_continues(cli, done_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(done_run / "run", run)
    code, stdout, stderr = cli("train", done_run / "sft.yaml", f"output_dir={run}", "train.max_steps=3",
                               "train.batch_size=4", "train.resume_changed=true")
    assert code == 0, stderr
    assert "resumed from step 2" in stdout
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [1, 2, 3]


def test_unchanged_config_resumes(cli, done_run, tmp_path):
    """max_steps is not part of the fingerprint: extending a finished run is allowed."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(done_run / "run", run)
    code, stdout, stderr = cli("train", done_run / "sft.yaml", f"output_dir={run}", "train.max_steps=3")
    assert code == 0 and "resumed from step 2" in stdout, stderr
