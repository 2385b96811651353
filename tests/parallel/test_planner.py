"""The planner: published MindFormers runs are feasible and estimated near their throughput; a case that
cannot fit is reported with a suggestion; the search respects its inputs."""
import pytest

from mindtune.models.spec import get_preset
from mindtune.parallel import GB, PlanRequest, Workload, get_hardware, search, suggest
from mindtune.parallel.cost import estimate_step_time, train_flops_per_token
from mindtune.parallel.memory import Strategy, estimate_memory
from mindtune.parallel.published import PUBLISHED
from mindtune.parallel.rules import check_strategy

HW = get_hardware("910b")


def published_workload(run):
    return Workload(get_preset(run.preset), run.seq_length, peft=run.peft, lora_rank=run.lora_rank or 8,
                    lora_targets=run.lora_targets or ("wq", "wk", "wv", "wo"), param_dtype=run.param_dtype,
                    compute_dtype="bfloat16", flash_attention=True)


@pytest.mark.parametrize("run", PUBLISHED, ids=lambda r: r.name)
def test_published_settings_are_feasible(run):
    w, s = published_workload(run), run.strategy
    assert check_strategy(w.spec, s, devices=s.devices, hardware=HW, seq_length=w.seq_length) == []
    mem = estimate_memory(w, s, HW)
    assert mem.total <= HW.usable_bytes, f"{run.name}: {mem.total / GB:.1f} GB"


# The step-time model's one free constant (910B efficiency 0.70) was fitted to the 7B full fine-tune: that run is
# the calibration point and proves nothing about the model, so it is only checked for drift. The planner is judged
# on the other, out-of-sample runs: each within OUT_OF_SAMPLE_TOLERANCE (docs/parallel.md states it). The 7B LoRA
# run is a known miss (+39%: the FLOP count predicts more LoRA speed-up than MindFormers publishes), kept as a
# strict expected failure rather than hidden behind a wider tolerance.
CALIBRATION = "Llama-2-7B full"
OUT_OF_SAMPLE_TOLERANCE = 0.15
KNOWN_MISSES = {"Llama-2-7B LoRA": "estimate 1.39x the published rate; see docs/parallel.md"}


def estimated_rate(run):
    w, s = published_workload(run), run.strategy
    return s.global_batch * w.seq_length / estimate_step_time(w, s, HW).total / s.devices


def test_calibration_point_is_reproduced():
    (run,) = [r for r in PUBLISHED if r.name == CALIBRATION]
    assert estimated_rate(run) / run.tokens_per_second == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("run", [
    pytest.param(r, id=r.name, marks=[pytest.mark.xfail(strict=True, reason=KNOWN_MISSES[r.name])]
                 if r.name in KNOWN_MISSES else []) for r in PUBLISHED if r.name != CALIBRATION])
def test_out_of_sample_published_throughput_is_near_estimate(run):
    est = estimated_rate(run)
    assert abs(est / run.tokens_per_second - 1) <= OUT_OF_SAMPLE_TOLERANCE, f"{est:.0f} tokens/s"


def test_planner_finds_published_7b_lora_setting_and_ranks_it_first_on_one_server():
    run = PUBLISHED[1]
    res = search(PlanRequest(published_workload(run), HW, 8))
    assert res.plans, "no plan"
    best = res.plans[0].strategy
    assert (best.dp, best.mp, best.pp) == (8, 1, 1)
    # the published micro-batch of 2 is among the feasible plans
    assert any(p.strategy.dp == 8 and p.strategy.micro_batch_size == 2 for p in res.plans)


def test_planner_70b_on_64_npus_includes_the_published_strategy():
    run = PUBLISHED[4]
    w = published_workload(run)
    res = search(PlanRequest(w, HW, 64, global_batch=run.strategy.global_batch))
    assert run.strategy in [p.strategy for p in res.plans]
    assert all(p.memory.total <= HW.usable_bytes for p in res.plans)
    # without sharding over dp, a 70B full fine-tune needs model or pipeline parallel across a whole server
    assert all(p.strategy.mp * p.strategy.pp >= 8 for p in res.plans if not p.strategy.optimizer_shard)


def test_70b_full_finetune_on_8_910a_cannot_fit_and_suggests_a_change():
    hw = get_hardware("910a")
    w = Workload(get_preset("llama2-70b"), 4096, compute_dtype="float16")
    req = PlanRequest(w, hw, 8)
    res = search(req)
    assert res.plans == [] and res.considered > 0
    assert res.closest.memory.total > hw.usable_bytes
    tips = suggest(req)
    assert tips and tips[0].startswith("use ") and "devices" in tips[0]
    n = int(tips[0].split()[1])
    assert n > 8 and n % 8 == 0
    # the suggested device count really fits and one server fewer does not
    assert search(PlanRequest(w, hw, n)).plans
    assert not search(PlanRequest(w, hw, n // 2)).plans


def test_suggestions_name_devices_lora_recompute_and_shorter_sequence():
    w = Workload(get_preset("llama2-7b"), 4096, compute_dtype="float16")
    req = PlanRequest(w, get_hardware("910a"), 4, recompute=["none"])
    assert not search(req).plans
    tips = suggest(req)
    assert tips[0].startswith("use 8 devices")
    for phrase in ("use LoRA", "full recompute", "shorten the sequence to 2048"):
        assert any(phrase in t for t in tips), (phrase, tips)


def test_ranking_is_by_estimated_throughput_and_all_plans_fit():
    w = Workload(get_preset("llama2-13b"), 4096, param_dtype="float16")
    res = search(PlanRequest(w, HW, 16, global_batch=64))
    rates = [p.tokens_per_second for p in res.plans]
    assert rates == sorted(rates, reverse=True)
    for p in res.plans:
        assert p.strategy.global_batch == 64 and p.strategy.devices == 16
        assert p.memory.total <= HW.usable_bytes
        if p.strategy.pp > 1:
            assert p.strategy.micro_batches >= p.strategy.pp


def test_fixed_recompute_is_respected():
    w = Workload(get_preset("llama2-7b"), 2048)
    res = search(PlanRequest(w, HW, 8, recompute=["full"]))
    assert res.plans and {p.strategy.recompute for p in res.plans} == {"full"}


def test_recompute_costs_time_and_saves_memory():
    w = Workload(get_preset("llama2-7b"), 4096)
    none, full = Strategy(dp=8, micro_batch_size=2), Strategy(dp=8, micro_batch_size=2, recompute="full")
    assert estimate_memory(w, full, HW).total < estimate_memory(w, none, HW).total
    assert estimate_step_time(w, full, HW).compute > estimate_step_time(w, none, HW).compute
    assert train_flops_per_token(w, "full") == pytest.approx(train_flops_per_token(w) * 4 / 3)
