"""stage: dpo through the real CLI on the tiny model (task: the chosen response contains "capital",
mindtune/assets/rm_keyword_*.jsonl), then `mindtune generate` on the run it leaves behind."""
import json
import math
import os

import numpy as np
import pytest

from mindtune.cli import main
from mindtune.engine.checkpoint import latest_checkpoint
from mindtune.engine.metrics import read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LORA = os.path.join(REPO, "run_configs", "tiny", "dpo_lora_cpu.yaml")
FULL = os.path.join(REPO, "run_configs", "tiny", "dpo_full_cpu.yaml")
SFT = os.path.join(REPO, "run_configs", "tiny", "sft_lora_cpu.yaml")
ASSETS = os.path.join(REPO, "mindtune", "assets")
# every run of this file: a constant lr, so a shorter run is a prefix of a longer one
COMMON = ("train.schedule=constant", "train.warmup_steps=0", "train.log_every=1", "data.eval_rows=40")
LEARN = ("train.max_steps=20", "train.eval_every=10", "train.save_every=10")


def metrics(out):
    return read_metrics(os.path.join(out, "metrics.jsonl"))


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dpo") / "lora"
    assert main(["train", LORA, f"output_dir={out}", *COMMON, *LEARN]) == 0
    return out


def test_lora_dpo_starts_at_log_2_and_learns_the_held_out_preference(lora_run):
    rows = metrics(lora_run)
    assert [r["step"] for r in rows] == list(range(1, 21))
    first = rows[0]
    assert first["loss"] == pytest.approx(math.log(2.0), abs=1e-5)     # policy == reference at the start
    assert first["reward_margin"] == pytest.approx(0.0, abs=1e-5) and first["accuracy"] == 0.0
    for key in ("reward_chosen", "reward_rejected", "logp_chosen", "logp_rejected", "logp_accuracy"):
        assert key in first and f"eval_{key}" in rows[9]
    assert rows[-1]["eval_accuracy"] >= 0.9 and rows[-1]["eval_reward_margin"] > 0
    assert np.mean([r["loss"] for r in rows[-5:]]) < first["loss"] - 0.1
    meta = json.load(open(lora_run / "model" / "mindtune_model.json"))
    assert meta["stage"] == "dpo" and meta["format"] == "mindtune-adapter" and meta["base_model"] == "tiny"
    assert meta["dpo"]["eval_accuracy"] == rows[-1]["eval_accuracy"]


def test_generate_works_on_the_dpo_output(lora_run, tmp_path):
    src = tmp_path / "prompts.jsonl"
    src.write_text('{"prompt": "Write a few words about winter."}\n{"prompt": "Write a few words about a town."}\n')
    out = tmp_path / "out.jsonl"
    assert main(["generate", "--model", str(lora_run / "model"), "--input", str(src), "--output", str(out),
                 "--max-new-tokens", "8", "--greedy"]) == 0
    rows = [json.loads(line) for line in open(out)]
    assert len(rows) == 2 and all(isinstance(r["output"], str) for r in rows)


def test_resume_after_kill_reproduces_the_uninterrupted_run(lora_run, cli, tmp_path):
    out = tmp_path / "resumed"
    args = ("train", LORA, f"output_dir={out}", *COMMON, *LEARN)
    code, _, _ = cli(*args, env={"MINDTUNE_KILL_AT": "after_save:10"})
    assert code != 0 and latest_checkpoint(str(out))[0] == 10
    code, stdout, stderr = cli(*args)
    assert code == 0, stderr
    assert "resumed from step 10" in stdout
    a, b = metrics(lora_run), metrics(out)
    assert [r["step"] for r in b] == list(range(1, 21))
    for ra, rb in zip(a, b):
        for key in ("loss", "grad_norm", "reward_margin", "eval_loss", "eval_accuracy"):
            if key in ra:
                assert rb[key] == pytest.approx(ra[key], rel=1e-5, abs=1e-6), (ra["step"], key)


def test_precomputed_reference_gives_the_same_steps_and_is_kept_with_the_run(lora_run, tmp_path):
    out = tmp_path / "pre"
    assert main(["train", LORA, f"output_dir={out}", *COMMON, "train.max_steps=3",
                 "dpo.precompute_reference=true"]) == 0
    saved = np.load(out / "reference_logps.npz")
    assert saved["train_chosen"].shape == (400,) and saved["eval_chosen"].shape == (40,)
    assert np.all(saved["train_chosen"] < 0)
    meta = json.load(open(out / "model" / "mindtune_model.json"))["dpo"]
    assert meta["initial_logp_accuracy"] == np.mean(saved["eval_chosen"] > saved["eval_rejected"])
    for ra, rb in zip(metrics(lora_run)[:3], metrics(out)):
        for key in ("loss", "reward_margin", "logp_chosen", "grad_norm"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-4, abs=1e-5), (ra["step"], key)


def test_reference_of_an_adapter_start_is_that_adapter(tmp_path):
    """Starting from an SFT LoRA adapter the reference must include it: IPO's loss at step 1 is then exactly
    1 / (2 beta)^2 (zero log-ratio), which fails if the reference were the bare base."""
    sft = tmp_path / "sft"
    assert main(["train", SFT, f"output_dir={sft}", "train.max_steps=4", "train.lr=5.0e-2", "peft.rank=8",
                 "peft.alpha=16", "train.eval_every=0", "data.eval=null"]) == 0
    out = tmp_path / "ipo"
    assert main(["train", LORA, f"output_dir={out}", f"model.path={sft / 'model'}", *COMMON,
                 "train.max_steps=1", "dpo.loss=ipo", "dpo.beta=0.5", "data.eval_rows=8"]) == 0
    row = metrics(out)[0]
    assert row["loss"] == pytest.approx(1.0, abs=1e-4) and row["reward_margin"] == pytest.approx(0.0, abs=1e-5)


def test_simpo_step_by_hand_from_its_logged_log_probabilities(tmp_path, capsys):
    out = tmp_path / "simpo"
    assert main(["train", FULL, f"output_dir={out}", *COMMON, "train.max_steps=1", "train.batch_size=1",
                 "dpo.loss=simpo", "dpo.beta=2.0", "dpo.gamma=0.5", "data.eval_rows=4"]) == 0
    assert "reference: none (simpo)" in capsys.readouterr().out
    row = metrics(out)[0]
    z = 2.0 * (row["logp_chosen"] - row["logp_rejected"]) - 0.5     # mean per-token log-probabilities
    assert row["loss"] == pytest.approx(math.log1p(math.exp(-z)), rel=1e-5)
    assert row["reward_chosen"] == pytest.approx(2.0 * row["logp_chosen"], rel=1e-5)


def test_the_base_is_held_once_with_peft_and_twice_for_full_fine_tuning(tmp_path):
    from mindtune.config import load_config
    from mindtune.stages.common import check_inputs, prepare_run
    from mindtune.stages.dpo import build_networks

    for config, copies in ((LORA, 1), (FULL, 2)):
        cfg = load_config(config, [f"output_dir={tmp_path / os.path.basename(config)}"])
        run = prepare_run(cfg, check_inputs(cfg))
        policy, reference, pool = build_networks(run, 4)
        assert pool.copies == copies
        ref_ids = {id(p) for p in reference.get_parameters()}
        trained = {id(p) for p in policy.trainable}
        assert not trained & ref_ids                        # the reference never trains
        base = [p for p in policy.network.get_parameters() if id(p) not in trained]
        shared = sum(id(p) in ref_ids for p in base)
        assert shared == (len(base) if copies == 1 else 0), (config, shared, len(base))
        names = [p.name for p in list(policy.network.get_parameters()) + list(reference.get_parameters())]
        unique = {id(p): p.name for p in list(policy.network.get_parameters()) + list(reference.get_parameters())}
        assert len(set(unique.values())) == len(unique)     # no two tensors share a name in the loss graph
        del names


@pytest.mark.parametrize("override, message", [
    ("dpo.loss=ipo dpo.beta=0", "dpo.beta: must be > 0 for the ipo loss"),
    ("dpo.loss=kto", "dpo.loss"),
])
def test_bad_dpo_settings_fail_before_anything_is_written(tmp_path, capsys, override, message):
    out = tmp_path / "never"
    assert main(["train", FULL, f"output_dir={out}", *override.split()]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not out.exists()
    assert main(["validate", FULL, *override.split()]) == 2
    assert message in capsys.readouterr().err
