"""stage: grpo through the real CLI on the tiny keyword task: the SFT model (full fine-tuning on
mindtune/assets/ppo_keyword_sft.jsonl) answers "Write a few words about X." with "capital" about half the time;
the rule reward (regex "capital") must raise the held-out reward."""
import json
import os

import numpy as np
import pytest

from mindtune.cli import main
from mindtune.engine.checkpoint import latest_checkpoint
from mindtune.engine.metrics import read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "run_configs", "tiny", "grpo_lora_cpu.yaml")
SFT = os.path.join(REPO, "run_configs", "tiny", "sft_keyword_cpu.yaml")
ASSETS = os.path.join(REPO, "mindtune", "assets")
DATA = (f"data.train={ASSETS}/ppo_keyword_prompts.jsonl", f"data.eval={ASSETS}/ppo_keyword_prompts_eval.jsonl")
# a short run for resume and error tests: 4 prompts x 4 samples = 2 micro-steps of 8 per iteration
SHORT = ("grpo.iterations=4", "grpo.rollout_batch=4", "grpo.eval_every=0", "train.save_every=2", "data.eval=null")


@pytest.fixture(scope="module")
def sft(tmp_path_factory):
    out = tmp_path_factory.mktemp("grpo") / "sft"
    assert main(["train", SFT, f"output_dir={out}", "train.max_steps=120", f"data.train={ASSETS}/ppo_keyword_sft.jsonl"]) == 0
    return out / "model"


def grpo(out, sft_model, *overrides):
    return main(["train", CONFIG, f"output_dir={out}", f"model.path={sft_model}", *DATA, *overrides])


@pytest.fixture(scope="module")
def trained(sft, tmp_path_factory):
    out = tmp_path_factory.mktemp("grpo") / "run"
    assert grpo(out, sft) == 0
    return out


def test_grpo_with_a_rule_raises_the_held_out_reward(trained):
    meta = json.load(open(trained / "model" / "mindtune_model.json"))
    assert meta["stage"] == "grpo" and meta["format"] == "mindtune-adapter"
    before, after = meta["grpo"]["initial_eval_reward"], meta["grpo"]["eval_reward"]
    print(f"GRPO tiny: held-out share of answers with 'capital' {before:.3f} -> {after:.3f}")
    assert after >= before + 0.15, (before, after)
    rows = read_metrics(trained / "metrics.jsonl")
    assert [r["iteration"] for r in rows] == list(range(1, 16))
    first = rows[0]
    for key in ("reward", "reward_std", "rewards/regex", "equal_reward_groups", "kl", "clip_fraction",
                "response_length", "seconds_generating", "seconds_training", "grad_norm"):
        assert first[key] is not None, key
    assert 0 <= first["equal_reward_groups"] <= 1 and first["rollout_kl"] == 0.0   # policy == reference at first
    assert "eval_reward" in rows[4] and "eval_kl" in rows[-1]
    assert all(r["grad_norm"] > 0 for r in rows)     # GRPO's loss is near 0 while its gradient is not


def test_generate_works_on_the_grpo_output(trained, tmp_path):
    out = tmp_path / "out.jsonl"
    assert main(["generate", "--model", str(trained / "model"), "--input", f"{ASSETS}/ppo_keyword_prompts_eval.jsonl",
                 "--output", str(out), "--max-new-tokens", "12", "--greedy"]) == 0
    rows = [json.loads(line) for line in open(out)]
    assert len(rows) == 16 and all(isinstance(r["output"], str) for r in rows)


def test_resume_after_kill_reproduces_the_uninterrupted_run(sft, cli, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert grpo(straight, sft, *SHORT) == 0
    args = ("train", CONFIG, f"output_dir={resumed}", f"model.path={sft}", *DATA, *SHORT)
    code, _, _ = cli(*args, env={"MINDTUNE_KILL_AT": "after_save:4"})       # after iteration 2
    assert code != 0 and latest_checkpoint(str(resumed))[0] == 4
    code, stdout, stderr = cli(*args)
    assert code == 0, stderr
    assert "resumed from step 4" in stdout
    a, b = read_metrics(straight / "metrics.jsonl"), read_metrics(resumed / "metrics.jsonl")
    assert [r["iteration"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):
        for key in ("reward", "loss", "kl", "grad_norm", "response_length"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-5, abs=1e-6), (ra["iteration"], key)


def test_a_rule_that_raises_names_the_row_and_the_function(sft, tmp_path, capsys):
    assert grpo(tmp_path / "boom", sft, *SHORT, "grpo.reward=[grpo_rules:boom]") == 2
    err = capsys.readouterr().err.strip()
    assert "ppo_keyword_prompts.jsonl:" in err and "reward grpo_rules:boom raised ValueError: no answer here" in err
    assert "\n" not in err
    assert grpo(tmp_path / "nan", sft, *SHORT, "grpo.reward=[regex, grpo_rules:not_a_number]") == 2
    assert "reward grpo_rules:not_a_number returned 'high' (str), not a number" in capsys.readouterr().err


@pytest.mark.parametrize("override, message", [
    ("grpo.reward=[no_such_module_xyz:fn]", "grpo.reward[0]: cannot import 'no_such_module_xyz'"),
    ("grpo.reward=[regex, grpo_rules:missing]", "grpo.reward[1]: 'grpo_rules' has no function 'missing'"),
    ("grpo.reward=[exact-match]", "grpo.reward[0]: 'exact-match' is not a built-in"),
    ("grpo.reward_weights=[1, 2]", "grpo.reward_weights: 2 weight(s) for 1 reward(s)"),
    ("grpo.rollout_batch=3", "not a multiple of train.batch_size"),
])
def test_bad_rewards_are_refused_before_anything_is_written(tmp_path, capsys, override, message):
    out = tmp_path / "never"
    assert main(["train", CONFIG, f"output_dir={out}", "model.path=tiny", *DATA, override]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err, err
    assert not out.exists()
    assert main(["validate", CONFIG, "model.path=tiny", *DATA, override]) == 2     # validate runs the same check
    assert message in capsys.readouterr().err


def test_beta_0_loads_no_reference(tmp_path):
    from mindtune.config import load_config
    from mindtune.stages.common import prepare_run
    from mindtune.stages.grpo import Roles, check

    for beta, copies in (("0", 1), ("0.04", 2)):
        cfg = load_config(CONFIG, [f"output_dir={tmp_path / beta}", "model.path=tiny", "peft.method=none", *DATA,
                                   f"grpo.beta={beta}"])
        _, checked, rewards, _, _ = check(cfg)
        roles = Roles(prepare_run(cfg, checked), rewards, 8, 64)
        assert (roles.reference is None) == (beta == "0") and roles.pool.copies == copies


def test_a_reward_model_and_a_rule_combine_with_weights(sft, tmp_path):
    rm = tmp_path / "rm"
    assert main(["train", os.path.join(REPO, "run_configs", "tiny", "rm_cpu.yaml"), f"output_dir={rm}",
                 "train.max_steps=10", "train.eval_every=0", "data.eval=null", "rm.stats_pairs=64"]) == 0
    out = tmp_path / "both"
    assert grpo(out, sft, "grpo.iterations=1", "grpo.rollout_batch=4", "data.eval=null",
                f"grpo.reward=[{rm}, regex]", "grpo.reward_weights=[0.5, 2.0]") == 0
    row = read_metrics(out / "metrics.jsonl")[0]
    rm_reward, rule = row[f"rewards/{rm}"], row["rewards/regex"]
    assert np.isfinite(rm_reward) and 0 <= rule <= 1
    assert row["reward"] == pytest.approx(0.5 * rm_reward + 2.0 * rule, rel=1e-6, abs=1e-9)
