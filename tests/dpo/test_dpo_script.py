"""scripts/train_dpo.sh and scripts/train_grpo.sh validate their config, then build the msrun command (DRY_RUN prints it)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(ROOT, "mindtune", "assets", "rm_keyword_train.jsonl")


def run(*args):
    env = {**os.environ, "MINDTUNE_PYTHON": sys.executable, "DRY_RUN": "1", "WORKERS": "2", "MASTER_PORT": "18981"}
    return subprocess.run(["bash", os.path.join(ROOT, "scripts", "train_dpo.sh"), *args], capture_output=True,
                          text=True, env=env, timeout=120)


def test_dpo_script_validates_then_launches(tmp_path):
    cfg = tmp_path / "dpo.yaml"
    cfg.write_text(f"stage: dpo\nmodel: {{path: tiny}}\ndata: {{train: {TRAIN}, max_length: 64}}\n")
    p = run(str(cfg), "train.max_steps=2")
    assert p.returncode == 0, p.stderr
    assert ": ok (stage dpo" in p.stdout and "--worker_num 2" in p.stdout and "train.max_steps=2" in p.stdout
    cfg.write_text(f"stage: sft\nmodel: {{path: tiny}}\ndata: {{train: {TRAIN}, max_length: 64}}\n")
    p = run(str(cfg))
    assert p.returncode == 2 and "is a 'sft' config, not 'dpo'" in p.stderr


def test_grpo_script_validates_then_launches(tmp_path):
    prompts = os.path.join(ROOT, "mindtune", "assets", "grpo_capitals_train.jsonl")
    cfg = tmp_path / "grpo.yaml"
    cfg.write_text(f"stage: grpo\nmodel: {{path: tiny}}\ndata: {{train: {prompts}, max_length: 48}}\n")
    env = {**os.environ, "MINDTUNE_PYTHON": sys.executable, "DRY_RUN": "1", "WORKERS": "2", "MASTER_PORT": "18983"}
    p = subprocess.run(["bash", os.path.join(ROOT, "scripts", "train_grpo.sh"), str(cfg)], capture_output=True,
                       text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert ": ok (stage grpo" in p.stdout and "--worker_num 2" in p.stdout
