"""scripts/train_{sft,rm,ppo}.sh: the config must name the stage and validate before anything launches."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(ROOT, "mindtune", "assets", "demo_sft_train.jsonl")


def run(script, *args, extra=None):
    env = {**os.environ, "MINDTUNE_PYTHON": sys.executable, "DRY_RUN": "1", "WORKERS": "2", **(extra or {})}
    return subprocess.run(["bash", os.path.join(ROOT, "scripts", script), *args], capture_output=True, text=True,
                          env=env, timeout=120)


def config(tmp_path, stage="sft", extra=""):
    p = tmp_path / "run.yaml"
    p.write_text(f"stage: {stage}\nmodel: {{path: tiny}}\ndata: {{train: {TRAIN}, max_length: 32}}\n{extra}")
    return str(p)


def test_sft_script_validates_then_launches(tmp_path):
    p = run("train_sft.sh", config(tmp_path), "train.max_steps=2", extra={"MASTER_PORT": "18977"})
    assert p.returncode == 0, p.stderr
    assert ": ok (stage sft" in p.stdout
    assert "--worker_num 2" in p.stdout and "mindtune.cli train" in p.stdout and "train.max_steps=2" in p.stdout


def test_stage_mismatch_is_refused(tmp_path):
    p = run("train_rm.sh", config(tmp_path))
    assert p.returncode == 2 and "is a 'sft' config, not 'rm'" in p.stderr


def test_invalid_config_is_refused_before_launch(tmp_path):
    p = run("train_sft.sh", config(tmp_path, extra="device: ascend\nparallel: {model_parallel: 3}\n"))
    assert p.returncode == 2 and "model_parallel" in p.stderr and "--worker_num" not in p.stdout
    p = run("train_ppo.sh", str(tmp_path / "missing.yaml"))
    assert p.returncode == 2 and "config not found" in p.stderr
