"""train.eval_metrics with LoRA: the task metrics logged during training equal `mindtune eval` on the saved adapter
(the merged weights the trainer generates with are the adapter's); unsupported setups are refused up front."""
import json
import os

import pytest

from mindtune.engine.metrics import read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LORA = os.path.join(REPO, "run_configs", "tiny", "sft_lora_cpu.yaml")


def test_lora_run_logs_task_metrics_equal_to_mindtune_eval(cli, tmp_path, assets):
    # LoRA on the demo's capitals task: a few steps teach the random base the answer's shape (capitals and
    # dashes), which ROUGE-L sees; generating with the unmerged base weights would score about 0
    run = tmp_path / "run"
    train_rows, eval_rows = (os.path.join(assets, f"demo_upper_{k}.jsonl") for k in ("train", "eval"))
    code, stdout, stderr = cli("train", LORA, f"output_dir={run}", "train.max_steps=12", "train.lr=1e-2",
                               "train.eval_every=6", "train.save_every=0", "train.eval_metrics=[exact_match,rouge]",
                               "train.eval_max_new_tokens=12", "data.eval_rows=16", f"data.train={train_rows}",
                               f"data.eval={eval_rows}", "data.max_length=40")
    assert code == 0, stderr
    rows = [r for r in read_metrics(run / "metrics.jsonl") if "eval_rougeL" in r]
    assert [r["step"] for r in rows] == [6, 12] and all("eval_exact_match" in r for r in rows)
    assert "task metrics at the start:" in stdout and "task metrics on data.eval (start -> end)" in stdout
    assert rows[-1]["eval_rougeL"] > 0.2, rows
    out = tmp_path / "eval"
    code, _, stderr = cli("eval", "--model", run / "model", "--input", eval_rows, "--limit", "16",
                          "--metrics", "exact_match", "rouge", "--max-new-tokens", "12", "--output", out)
    assert code == 0, stderr
    summary = json.loads((out / "summary.json").read_text())["metrics"]
    assert summary["rougeL"] == pytest.approx(rows[-1]["eval_rougeL"], abs=1e-9)
    assert summary["exact_match"] == pytest.approx(rows[-1]["eval_exact_match"])


@pytest.mark.parametrize("overrides, message", [
    (["peft.method=prefix"], "train.eval_metrics: generation during training supports peft.method none and lora"),
    (["train.eval_metrics=[f1]"], "train.eval_metrics: unknown metric 'f1'"),
    (["data.eval=null"], "train.eval_metrics: needs data.eval"),
])
def test_unsupported_setups_are_refused_before_the_run(cli, tmp_path, overrides, message):
    run = tmp_path / "run"
    code, _, stderr = cli("train", LORA, f"output_dir={run}", "train.eval_metrics=[exact_match]", *overrides)
    assert code == 2 and message in stderr, stderr
    assert not run.exists()
