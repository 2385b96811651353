"""PPO under msrun data parallel on CPU (2 workers): each rank rolls out its own share of the prompts, the updates
are all-reduced, rank 0 alone writes the metrics (global means over both ranks' rollouts) and the model."""
import json
import os
import socket
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(REPO, "run_configs", "tiny")


@pytest.mark.slow
def test_two_worker_ppo_runs_data_parallel(tmp_path):
    env = {**os.environ, "PYTHONPATH": REPO, "MINDTUNE_PYTHON": sys.executable, "MS_NODE_TIMEOUT": "10",
           "MINDTUNE_NO_PROGRESS": "1", "LOCAL_DEFAULT_PATH": str(tmp_path / "mf")}

    def train(*args):
        p = subprocess.run([sys.executable, "-m", "mindtune.cli", "train", *args], capture_output=True, text=True,
                           env=env, cwd=REPO, timeout=900)
        assert p.returncode == 0, p.stderr[-3000:]

    train(os.path.join(TINY, "sft_keyword_cpu.yaml"), f"output_dir={tmp_path / 'sft'}", "train.max_steps=20")
    train(os.path.join(TINY, "rm_cpu.yaml"), f"output_dir={tmp_path / 'rm'}", "train.max_steps=20",
          "train.eval_every=0")
    with socket.socket() as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    two = subprocess.run(["bash", os.path.join(REPO, "scripts", "msrun_launcher.sh"), "--workers", "2",
                          "--master-port", str(port), "--log-dir", str(tmp_path / "log"), "--tail-log", "none",
                          "--cluster-timeout", "300", "mindtune", "train", os.path.join(TINY, "ppo_lora_cpu.yaml"),
                          f"output_dir={tmp_path / 'ppo'}", f"ppo.actor={tmp_path / 'sft'}",
                          f"ppo.reward_model={tmp_path / 'rm'}", "ppo.iterations=3", "ppo.rollout_batch=8",
                          "ppo.eval_every=0", "parallel.data_parallel=2"],
                         capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
    logs = ""
    if os.path.isdir(tmp_path / "log"):
        for name in sorted(n for n in os.listdir(tmp_path / "log") if n.startswith("worker_")):
            with open(tmp_path / "log" / name, errors="replace") as f:
                logs += f"--- {name}\n" + "".join(l for l in f if not l.startswith(("[WARNING]", "[INFO]")))[-2000:]
    assert two.returncode == 0, two.stderr[-1500:] + logs
    with open(tmp_path / "ppo" / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert [r["iteration"] for r in rows] == [1, 2, 3]              # rank 0 logs alone, once per iteration
    assert rows[0]["kl"] == 0.0 and all(r["grad_norm"] is not None for r in rows)
    assert os.path.isdir(tmp_path / "ppo" / "model")
