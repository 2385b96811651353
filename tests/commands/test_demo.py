"""mindtune demo: its embedded config and its run-config twin agree; the tiny model learns the held-out task
(task metrics logged during training, and the same figure from `mindtune eval` on the saved model)."""
import json
import os
import re

import pytest

from mindtune.commands.demo import DEMO, demo_overrides
from mindtune.config import load_config
from mindtune.engine.metrics import read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_demo_config_matches_its_run_config_twin():
    embedded = load_config(None, demo_overrides("runs/x"), defaults=DEMO).to_dict()
    twin = load_config(os.path.join(REPO, "run_configs", "tiny", "sft_demo_cpu.yaml"), ["output_dir=runs/x"]).to_dict()
    for cfg in (embedded, twin):
        cfg["data"]["train"], cfg["data"]["eval"] = (os.path.basename(cfg["data"][k]) for k in ("train", "eval"))
    assert embedded == twin


def start_metric(stdout: str, name: str = "exact_match") -> float:
    found = re.search(rf"task metrics at the start: .*?{name} ([0-9.]+)", stdout)
    assert found, stdout
    return float(found.group(1))


@pytest.fixture(scope="module")
def short_demo(tmp_path_factory, cli):
    """The demo cut to 100 steps, with ROUGE beside exact match and an evaluation every 25 steps."""
    run = tmp_path_factory.mktemp("demo") / "run"
    code, stdout, stderr = cli("demo", "--output-dir", run, "train.max_steps=100", "train.eval_every=25",
                               "train.save_every=0", "train.eval_metrics=[exact_match,rouge]")
    assert code == 0, stderr
    return run, stdout


def test_task_metrics_are_logged_at_each_evaluation(short_demo):
    run, stdout = short_demo
    rows = [r for r in read_metrics(os.path.join(run, "metrics.jsonl")) if "eval_exact_match" in r]
    assert [r["step"] for r in rows] == [25, 50, 75, 100]
    for row in rows:
        assert {"eval_loss", "eval_rouge1", "eval_rouge2", "eval_rougeL"} <= set(row)
        assert 0.0 <= row["eval_exact_match"] <= row["eval_rougeL"] + 1e-6 <= 1.0 + 1e-6   # ROUGE: 1 - 5e-9 when exact
    assert "task metrics on data.eval (start -> end): exact_match 0.000 ->" in stdout
    assert "before" in stdout and "-> after" in stdout


def test_held_out_exact_match_rises_from_zero(short_demo):
    run, stdout = short_demo
    rows = [r for r in read_metrics(os.path.join(run, "metrics.jsonl")) if "eval_exact_match" in r]
    # cut to 100 steps (its cosine schedule ends sooner): seeds 0-3 ended at 1.0; with Llama's 0.02 initialisation
    # (before mindtune.models.build.init_std) seeds 0 and 1 ended at 0.0 and 0.17. ROUGE-L (on letters and dashes)
    # starts near 0.45. The 350-step demo: slow test.
    assert start_metric(stdout) <= 0.05 and rows[-1]["eval_exact_match"] >= 0.9, rows
    assert rows[-1]["eval_rougeL"] >= start_metric(stdout, "rougeL") + 0.25, rows
    assert re.search(r"held-out exact match: [0-9.]+% -> [0-9.]+% in \d+ s", stdout)


def test_logged_metrics_equal_mindtune_eval_on_the_saved_model(short_demo, cli, assets):
    run, _ = short_demo
    last = [r for r in read_metrics(os.path.join(run, "metrics.jsonl")) if "eval_exact_match" in r][-1]
    out = run.parent / "eval"
    code, _, stderr = cli("eval", "--model", run / "model", "--input", os.path.join(assets, "demo_upper_eval.jsonl"),
                          "--metrics", "exact_match", "rouge", "--max-new-tokens", "12", "--output", out)
    assert code == 0, stderr
    summary = json.loads((out / "summary.json").read_text())["metrics"]
    assert summary["exact_match"] == pytest.approx(last["eval_exact_match"])
    assert summary["rougeL"] == pytest.approx(last["eval_rougeL"], abs=1e-6)


@pytest.mark.slow
# seeds 5 and 7 ended at 25% and 0% with Llama's 0.02 initialisation and lr 5e-3; seed 5 at 59% with lr 2e-3
@pytest.mark.parametrize("seed", [0, 5, 7])
def test_full_demo_reaches_ninety_percent(cli, tmp_path, seed):
    code, stdout, stderr = cli("demo", "--output-dir", tmp_path / "run", f"seed={seed}")
    assert code == 0, stderr
    rows = [r for r in read_metrics(os.path.join(tmp_path / "run", "metrics.jsonl")) if "eval_exact_match" in r]
    assert start_metric(stdout) <= 0.05 and rows[-1]["eval_exact_match"] >= 0.9, rows


@pytest.mark.slow
def test_real_demo_teaches_smollm2_letter_reversal(cli, tmp_path):
    """`mindtune demo --real` (about 8 minutes on 2 cores): the base model reverses no held-out row; LoRA >= 90%."""
    model = os.path.join(REPO, "models", "smollm2-135m")
    if not os.path.isdir(model):
        pytest.skip("make smollm2 converts the real model into models/smollm2-135m")
    code, stdout, stderr = cli("demo", "--real", "--output-dir", tmp_path / "run", env={"MINDTUNE_SMOLLM2_DIR": model},
                               timeout=1800)
    assert code == 0, stderr
    rows = [r for r in read_metrics(os.path.join(tmp_path / "run", "metrics.jsonl")) if "eval_exact_match" in r]
    assert start_metric(stdout) <= 0.1 and rows[-1]["eval_exact_match"] >= 0.9, rows
