"""A real 2-worker msrun data-parallel SFT run on CPU through scripts/msrun_launcher.sh, against a 1-worker
run with the same global batch (4 sequences: 1 x 4 vs 2 x 2).

Both runs apply the gradient of the same 4 sequences each step, and the engine weights each rank by its share of
the step's label tokens (an AllReduce of the counts), so the step's loss and gradient are the sum over all
response tokens divided by their number on either side: losses and gradient norms agree to 1e-5 at every step,
and the final weights to 1e-5. (The engine used to average per-rank means, which this test tolerated at 5%.)
The 2-worker run is then repeated: it loads each worker's graphs from the compile cache and trains the same."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
STEPS = 6


def worker_errors(log_dir):
    """The non-log lines at the end of each worker's log: where a failed rank says why."""
    out = []
    for name in sorted(os.listdir(log_dir)) if os.path.isdir(log_dir) else []:
        if name.startswith("worker_"):
            with open(os.path.join(log_dir, name), encoding="utf-8", errors="replace") as f:
                lines = [l for l in f if not l.startswith(("[WARNING]", "[INFO]"))]
            out.append(f"--- {name}\n" + "".join(lines[-25:]))
    return "\n".join(out)


def metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.mark.slow
def test_two_worker_sft_matches_one_worker(tmp_path):
    cfg = tmp_path / "sft.yaml"
    cfg.write_text(
        "stage: sft\nseed: 7\ndevice: cpu\nmodel: {path: tiny}\n"
        f"data: {{train: {os.path.join(ROOT, 'mindtune', 'assets', 'demo_sft_train.jsonl')}, max_length: 48}}\n"
        f"train: {{batch_size: 4, max_steps: {STEPS}, lr: 3.0e-3, log_every: 1}}\npeft: {{method: none}}\n")
    env = {**os.environ, "PYTHONPATH": ROOT, "MINDTUNE_PYTHON": sys.executable, "MS_NODE_TIMEOUT": "10",
           "LOCAL_DEFAULT_PATH": str(tmp_path / "mf")}
    one = subprocess.run([sys.executable, "-m", "mindtune.cli", "train", str(cfg), f"output_dir={tmp_path / 'one'}"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]

    env["MINDTUNE_CACHE_DIR"] = str(tmp_path / "cache")    # an empty compile cache for the 2-worker runs
    two = two_workers(cfg, tmp_path, "two", env)
    assert two.returncode == 0, two.stderr[-1500:] + worker_errors(tmp_path / "log_two")

    m1, m2 = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert [r["step"] for r in m1] == [r["step"] for r in m2] == list(range(1, STEPS + 1))   # rank 0 logs alone
    for a, b in zip(m1, m2):
        print(f"step {a['step']}: loss {a['loss']:.4f} / {b['loss']:.4f}, grad norm {a['grad_norm']:.4f} / "
              f"{b['grad_norm']:.4f}")
    for a, b in zip(m1, m2):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5), (a, b)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-5), (a, b)
    from safetensors.numpy import load_file
    w1, w2 = (load_file(str(tmp_path / run / "model" / "model.safetensors")) for run in ("one", "two"))
    assert sorted(w1) == sorted(w2)
    for name in w1:
        # Adam divides by sqrt(v): where a gradient entry is ~0, float summation order moves the update by a
        # few 1e-6 to 1e-5 (observed 2e-6 on one entry of 8192 with the 0.02 initialisation, 1.7e-5 on one entry
        # with the fan-in one, the lr being 3e-3); the losses and norms above are equal to 1e-5 at every step
        np.testing.assert_allclose(w2[name], w1[name], rtol=1e-5, atol=5e-5, err_msg=name)
    assert m1[-1]["loss"] < m1[0]["loss"] - 0.5       # and it trained
    assert os.path.isdir(tmp_path / "two" / "model")

    # The same 2-worker run again loads each worker's graphs from the compile cache (MindSpore names them
    # MS_WORKERcompile_cache_<n>.mindir under msrun) and trains the same.
    again = two_workers(cfg, tmp_path, "again", env)
    assert again.returncode == 0, again.stderr[-1500:] + worker_errors(tmp_path / "log_again")
    with open(tmp_path / "log_again" / "worker_0.log", encoding="utf-8", errors="replace") as f:
        log = f.read()
    assert "loading the training step for batches of 2x" in log and "compiling the training step" not in log
    assert [(r["loss"], r["grad_norm"]) for r in metrics(tmp_path / "again")] == \
        [(r["loss"], r["grad_norm"]) for r in m2]


def two_workers(cfg, tmp_path, name, env):
    with socket.socket() as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    return subprocess.run(["bash", os.path.join(ROOT, "scripts", "msrun_launcher.sh"), "--workers", "2",
                           "--master-port", str(port), "--log-dir", str(tmp_path / f"log_{name}"), "--tail-log",
                           "none", "--cluster-timeout", "300", "mindtune", "train", str(cfg),
                           f"output_dir={tmp_path / name}", "train.batch_size=2", "parallel.data_parallel=2"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
