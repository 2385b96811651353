"""bench/bench_train.py's summary of alternating rounds: the arithmetic only (no model runs here)."""
import importlib.util
import os

import pytest

PATH = os.path.join(os.path.dirname(__file__), "..", "bench", "bench_train.py")


@pytest.fixture(scope="module")
def bench_train():
    spec = importlib.util.spec_from_file_location("bench_train", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def mindtune_round(step, peak, to_first):
    return {"step_s_median": step, "tokens_per_s": 1024 / step, "peak_rss_mb": peak, "first_step_s": to_first - 5,
            "to_first_step_s": to_first, "build_s": 5.0, "losses": [11.3]}


def test_the_result_is_the_median_rounds_ratio_and_each_side_keeps_its_worst_peak_and_start(bench_train):
    rounds = [{"mindtune": mindtune_round(4.0, 3400, 24.0), "reference": {"step_s_median": 6.0, "peak_rss_mb": 4200}},
              {"mindtune": mindtune_round(5.0, 3500, 26.0), "reference": {"step_s_median": 5.0, "peak_rss_mb": 4300}},
              {"mindtune": mindtune_round(3.0, 3450, 25.0), "reference": {"step_s_median": 5.1, "peak_rss_mb": 4100}}]
    summary = bench_train.summarize(rounds, tokens=1024)
    # per round 6.0/4.0 = 1.5, 5.0/5.0 = 1.0, 5.1/3.0 = 1.7: the median round's 1.5, neither the ratio of the
    # medians (5.1/4.0 = 1.275) nor the mean (1.4)
    assert summary["ratio_rounds"] == [1.5, 1.0, 1.7]
    assert summary["ratio_tokens_per_s"] == 1.5
    mine, ref = summary["mindtune"], summary["reference"]
    assert (mine["step_s_median"], mine["tokens_per_s"]) == (4.0, 256.0)
    assert (mine["peak_rss_mb"], mine["mb_per_token"], mine["to_first_step_s"]) == (3500, 3.42, 26.0)
    assert [r["to_first_step_s"] for r in mine["rounds"]] == [24.0, 26.0, 25.0]
    assert (ref["step_s_median"], ref["peak_rss_mb"]) == (5.1, 4300)


def test_rounds_whose_reference_failed_are_left_out_of_the_ratio(bench_train):
    rounds = [{"mindtune": mindtune_round(4.0, 3400, 24.0), "reference": {"error": "reference not run"}},
              {"mindtune": mindtune_round(4.0, 3400, 24.0), "reference": {"step_s_median": 4.4, "peak_rss_mb": 4200}}]
    summary = bench_train.summarize(rounds, tokens=1024)
    assert summary["ratio_rounds"] == [1.1]
    assert summary["reference"]["step_s_median"] == 4.4

    alone = bench_train.summarize(rounds[:1], tokens=1024)
    assert "ratio_tokens_per_s" not in alone and alone["reference"] == {"error": "reference not run"}
