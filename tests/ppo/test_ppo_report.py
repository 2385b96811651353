"""mindtune report on an RL run: reward, KL, value loss and response length per iteration, as a PNG."""
import json
import types

from mindtune.commands import report


def test_rl_rows_are_plotted_against_the_iteration(tmp_path, monkeypatch):
    rows = [{"step": 4 * i, "iteration": i, "loss": 0.1, "reward": 0.1 * i, "score_normalised": 0.1 * i, "kl": 0.01 * i,
             "value_loss": 1.0 / i, "response_length": 10 - i, "policy_loss": 0.0, "clip_fraction": 0.1,
             "approx_kl": 0.01, "entropy": 2.0, "seconds_generating": 1.0, "seconds_training": 2.0}
            for i in range(1, 6)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    seen = {}
    real_plot = report.plot

    def spy(rows_, panels, output, title="", x="step"):
        seen.update(panels=dict(panels), x=x)
        real_plot(rows_, panels, output, title, x)

    monkeypatch.setattr(report, "plot", spy)
    assert report.run(types.SimpleNamespace(run_dir=str(tmp_path), output=None)) == 0
    assert seen["x"] == "iteration"
    for title, name in (("reward", "reward"), ("KL to the reference", "kl"), ("value loss", "value_loss"),
                        ("response length (tokens)", "response_length")):
        assert name in seen["panels"][title]
    png = (tmp_path / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10000
