"""The PPO stage through the CLI on the tiny keyword pipeline: SFT (full) -> RM (full) -> PPO (LoRA).

The SFT model answers "Write a few words about X." with a few words, "capital" among them about half the time;
the reward model prefers answers containing "capital". PPO must raise the held-out score with a bounded KL.
SFT and RM are trained once for the module."""
import json
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ASSETS = os.path.join(REPO, "mindtune", "assets")
PPO_CONFIG = os.path.join(REPO, "run_configs", "tiny", "ppo_lora_cpu.yaml")


def mindtune(*args, env=None, check=True):
    full_env = dict(os.environ, MINDTUNE_NO_PROGRESS="1", **(env or {}))
    proc = subprocess.run([sys.executable, "-m", "mindtune.cli", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"mindtune {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("ppo")
    sft, rm = str(root / "sft"), str(root / "rm")
    mindtune("train", os.path.join(REPO, "run_configs", "tiny", "sft_keyword_cpu.yaml"), f"output_dir={sft}",
             "train.max_steps=120")
    mindtune("train", os.path.join(REPO, "run_configs", "tiny", "rm_cpu.yaml"), f"output_dir={rm}",
             "train.max_steps=100", "train.eval_every=0")
    return root, sft, rm


# 16 iterations of 32 rollouts: the held-out gain this test asks for was reached by every one of 6 runs (seeds 0-2 with
# each of two AdamW implementations; smallest gain of the last two evaluations' mean +1.36). With 6 iterations of
# 16 rollouts the same gain came on one seed in three.
STRAIGHT = ("ppo.iterations=16", "ppo.rollout_batch=32", "ppo.eval_every=4", "train.save_every=2")


def ppo(pipeline, name, *overrides, env=None, check=True):
    root, sft, rm = pipeline
    out = str(root / name)
    proc = mindtune("train", PPO_CONFIG, f"output_dir={out}", f"ppo.actor={sft}", f"ppo.reward_model={rm}",
                    *overrides, env=env, check=check)
    return out, proc


@pytest.fixture(scope="module")
def learning_run(pipeline):
    """The straight run every other test compares with: 16 iterations (8 optimizer steps each), checkpoints every 2."""
    out, proc = ppo(pipeline, "straight", *STRAIGHT)
    return out, proc.stdout


def test_first_iteration_kl_is_zero_and_rewards_are_the_score(learning_run):
    out, stdout = learning_run
    first = metrics(out)[0]
    # actor == reference at the first rollout: every per-token KL is exactly 0, so each row's reward is its score
    assert first["iteration"] == 1 and first["kl"] == 0.0
    assert first["reward"] == pytest.approx(first["score_normalised"], abs=1e-9)
    # old log-probabilities come from the training network; the generator's agree to float32 rounding
    gap = float(stdout.split("log-probability difference ")[1].split()[0])
    assert gap < 1e-4


def test_ppo_raises_the_held_out_score_with_a_bounded_kl(learning_run):
    out, stdout = learning_run
    rows = metrics(out)
    assert [r["iteration"] for r in rows] == list(range(1, 17))
    evals = [r for r in rows if "eval_score" in r]
    assert [r["iteration"] for r in evals] == [4, 8, 12, 16]
    before = float(stdout.split("held-out reward-model score ")[1].split()[0])
    after = (evals[-2]["eval_score"] + evals[-1]["eval_score"]) / 2   # one sample per held-out prompt: average two
    assert after > before + 1.0, (before, after)
    assert evals[-1]["eval_kl"] < 10.0                     # the bound this test states for 16 iterations
    for key in ("reward", "reward_std", "score", "kl", "kl_coef", "entropy", "policy_loss", "value_loss",
                "clip_fraction", "approx_kl", "explained_variance", "response_length", "eos_fraction",
                "seconds_generating", "seconds_training"):
        assert rows[-1][key] is not None, key


def test_resume_after_a_kill_reproduces_the_straight_run(pipeline, learning_run):
    """A 6-iteration run killed after iteration 4 and resumed matches the straight run's first 6 iterations (the
    lr is constant and nothing else depends on the number of iterations still to come)."""
    straight, _ = learning_run
    short = (*STRAIGHT, "ppo.iterations=6")
    killed, proc = ppo(pipeline, "killed", *short, env={"MINDTUNE_KILL_AT": "after_save:32"},
                       check=False)   # killed after the checkpoint of iteration 4 (= optimizer step 32)
    assert proc.returncode == -9
    assert [r["iteration"] for r in metrics(killed)] == list(range(1, 5))
    ppo(pipeline, "killed", *short)
    a, b = metrics(straight)[:6], metrics(killed)
    assert len(b) == 6
    for ra, rb in zip(a, b):
        for key in ("score", "kl", "policy_loss", "value_loss", "kl_coef"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-5, abs=1e-6), (ra["iteration"], key)


def test_generate_and_score_on_the_actor_and_the_base_is_shared(pipeline, learning_run, tmp_path):
    out, stdout = learning_run
    assert "base copies loaded: 2" in stdout   # SFT model (actor, reference) + RM model (reward, critic)
    rows = tmp_path / "in.jsonl"
    rows.write_text(json.dumps({"prompt": "Write a few words about winter."}) + "\n")
    mindtune("generate", "--model", out, "--input", str(rows), "--output", str(tmp_path / "out.jsonl"),
             "--max-new-tokens", "8")
    assert json.loads((tmp_path / "out.jsonl").read_text())["output"].strip()
    # generate's rows ({"prompt", "output"}) go straight into the reward model
    mindtune("score", "--model", pipeline[2], "--input", str(tmp_path / "out.jsonl"), "--output",
             str(tmp_path / "scored.jsonl"))
    assert isinstance(json.loads((tmp_path / "scored.jsonl").read_text())["score"], float)
    with open(os.path.join(out, "model", "mindtune_model.json")) as f:
        assert json.load(f)["peft"]["method"] == "lora"


@pytest.mark.slow
def test_share_base_false_loads_a_copy_per_role(pipeline):
    out, proc = ppo(pipeline, "unshared", "ppo.iterations=1", "ppo.share_base=false", "data.eval=null")
    assert "base copies loaded: 4" in proc.stdout   # actor, reference, reward model, critic: one each


@pytest.mark.parametrize("case", ["rm_vocab", "actor_not_model", "long_prompt", "empty_prompts", "no_rm"])
def test_bad_input_one_line_and_nothing_written(pipeline, tmp_path, case):
    root, sft, rm = pipeline
    out = tmp_path / "run"
    args = [f"output_dir={out}", f"ppo.actor={sft}", f"ppo.reward_model={rm}"]
    if case == "rm_vocab":
        other = tmp_path / "rm_other"          # the same reward model, said to have a larger vocabulary
        shutil.copytree(os.path.join(rm, "model"), other / "model")
        meta = json.loads((other / "model" / "mindtune_model.json").read_text())
        meta["spec"]["vocab_size"] = 600
        (other / "model" / "mindtune_model.json").write_text(json.dumps(meta))
        args[2] = f"ppo.reward_model={other}"
        expect = f"ppo.reward_model: {other}/model has a different tokenizer or vocabulary than the actor"
    elif case == "actor_not_model":
        (tmp_path / "notamodel").mkdir()
        args[1] = f"ppo.actor={tmp_path / 'notamodel'}"
        expect = f"ppo.actor: {tmp_path / 'notamodel'} is not a mindtune model directory"
    elif case == "long_prompt":
        data = tmp_path / "long.jsonl"
        data.write_text(json.dumps({"prompt": "ok"}) + "\n" + json.dumps({"prompt": "word " * 40}) + "\n")
        args.append(f"data.train={data}")
        expect = f"{data}:2: the prompt has"
    elif case == "empty_prompts":
        data = tmp_path / "empty.jsonl"
        data.write_text("\n")
        args.append(f"data.train={data}")
        expect = f"{data}: the file has no rows"
    else:
        args[2] = "ppo.reward_model=null"
        expect = "ppo.reward_model: required"
    proc = mindtune("train", PPO_CONFIG, *args, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith(f"mindtune train: error: {expect}"), lines
    assert not out.exists()


def test_a_second_run_loads_every_graph_from_the_compile_cache(pipeline, tmp_path):
    """The trainer's graphs and PPO's own (actor + critic, reference, reward forwards) are loaded, not compiled,
    by a second run of the same configuration, and it trains exactly as the first did."""
    cache = tmp_path / "cache"
    env = {"MINDTUNE_CACHE_DIR": str(cache)}
    first, _ = ppo(pipeline, "cache_first", "ppo.iterations=2", env=env)
    (key,) = os.listdir(cache / "graphs")
    rank_dir = cache / "graphs" / key / "rank_0"
    with open(rank_dir / "mindtune_manifest.json") as fh:
        graphs = {entry["graph"] for entry in json.load(fh).values()}
    assert {"ppo.actor_forward", "ppo.reference_forward", "ppo.reward_forward", "train_step"} <= graphs
    written = {f.name: f.stat().st_mtime_ns for f in (rank_dir / "graph_cache").glob("*.mindir")}
    second, proc = ppo(pipeline, "cache_second", "ppo.iterations=2", env=env)
    assert "loading the training step for batches of" in proc.stderr
    assert {f.name: f.stat().st_mtime_ns for f in (rank_dir / "graph_cache").glob("*.mindir")} == written
    keys = ("iteration", "score", "kl", "policy_loss", "value_loss", "eval_score")
    assert [[r.get(k) for k in keys] for r in metrics(second)] == [[r.get(k) for k in keys] for r in metrics(first)]
