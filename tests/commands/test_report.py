"""mindtune report: plots the metrics of a run directory, and refuses a directory without metrics."""
import json


def test_report_writes_a_plot(cli, tmp_path):
    rows = [{"step": s, "loss": 5.0 - 0.1 * s, "lr": 1e-3, "grad_norm": 1.0, "tokens_per_s": 100.0,
             "accuracy": 0.5 + 0.01 * s} for s in range(1, 21)]
    rows[-1]["eval_loss"] = 3.5
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    code, stdout, stderr = cli("report", tmp_path)
    assert code == 0, stderr
    png = tmp_path / "report.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert "last step 20" in stdout and "eval_loss=3.5" in stdout


def test_report_refuses_an_empty_directory(cli, tmp_path):
    code, _, stderr = cli("report", tmp_path)
    assert code == 2 and "no metrics" in stderr


def test_report_shows_task_metrics(cli, tmp_path):
    rows = [{"step": s, "loss": 2.0 / s, "lr": 1e-3, "grad_norm": 1.0, "tokens_per_s": 100.0} for s in range(1, 11)]
    for s, em in ((5, 0.25), (10, 0.875)):
        rows[s - 1].update(eval_loss=1.0 / s, eval_exact_match=em, eval_rougeL=em + 0.05)
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    code, stdout, stderr = cli("report", tmp_path)
    assert code == 0, stderr
    assert "eval_exact_match=0.875" in stdout and "eval_rougeL=0.925" in stdout
