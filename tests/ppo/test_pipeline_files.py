"""The shipped PPO data, the embedded pipeline experiments and their run_configs twins, and scripts/pipeline.sh."""
import os
import subprocess
import sys

from mindtune.config import load_config
from mindtune.stages import pipeline

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests", "ppo"))
import make_ppo_data  # noqa: E402
from tests.rm.make_rm_data import ASSETS  # noqa: E402


def test_shipped_sets_are_what_the_generator_writes(tmp_path):
    for name, rows in make_ppo_data.all_sets().items():
        make_ppo_data.write(name, rows, str(tmp_path))
        with open(os.path.join(ASSETS, name), encoding="utf-8") as shipped:
            assert shipped.read() == (tmp_path / name).read_text(), name
    outputs = [r["output"].split() for r in make_ppo_data.all_sets()["ppo_keyword_sft.jsonl"]]
    share = sum("capital" in words for words in outputs) / len(outputs)
    assert 0.4 < share < 0.6          # the SFT model must leave PPO something to learn


def test_embedded_pipeline_equals_its_run_configs():
    for experiment, name in ((pipeline.SFT, "sft_keyword_cpu"), (pipeline.RM, "rm_cpu"),
                             (pipeline.PPO, "ppo_lora_cpu")):
        embedded = load_config(None, [], defaults=pipeline._with_assets(experiment)).to_dict()
        cwd = os.getcwd()
        try:
            os.chdir(REPO)
            filed = load_config(os.path.join("run_configs", "tiny", f"{name}.yaml"), []).to_dict()
        finally:
            os.chdir(cwd)
        for config in (embedded, filed):
            config.pop("output_dir")
            config["ppo"].pop("actor"), config["ppo"].pop("reward_model")
            for key in ("train", "eval"):
                if config["data"][key]:
                    config["data"][key] = os.path.basename(config["data"][key])
        assert embedded == filed, name


def test_pipeline_script_validates_sft_and_rm_then_names_the_ppo_command(tmp_path):
    env = {**os.environ, "MINDTUNE_PYTHON": sys.executable, "DRY_RUN": "1", "WORKERS": "2"}
    configs = [os.path.join(REPO, "run_configs", "tiny", f"{n}.yaml") for n in ("sft_keyword_cpu", "rm_cpu",
                                                                                "ppo_lora_cpu")]
    p = subprocess.run(["bash", os.path.join(REPO, "scripts", "pipeline.sh"), *configs, str(tmp_path / "r")],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert p.returncode == 0, p.stderr
    assert ": ok (stage sft" in p.stdout and ": ok (stage rm" in p.stdout
    assert f"ppo.actor={tmp_path / 'r'}/sft ppo.reward_model={tmp_path / 'r'}/rm" in p.stdout
    p = subprocess.run(["bash", os.path.join(REPO, "scripts", "pipeline.sh"), *configs[:2]], capture_output=True,
                       text=True, env=env, timeout=60)
    assert p.returncode == 2 and "usage:" in p.stderr
