"""`mindtune plan --stage ppo` proposes data-parallel strategies only (PPO with tensor or pipeline parallelism is
out of scope), and refuses context parallelism for it."""
from mindtune.models.spec import get_preset
from mindtune.parallel import PlanRequest, Workload, get_hardware, search

HW = get_hardware("910b")


def workload(stage):
    return Workload(get_preset("llama2-7b"), 1024, stage=stage, peft="lora", compute_dtype="bfloat16")


def test_ppo_is_planned_data_parallel_only():
    sft = search(PlanRequest(workload("sft"), HW, 16))
    assert any(p.strategy.mp * p.strategy.pp > 1 for p in sft.plans)      # the search does use them elsewhere
    for stage in ("ppo", "grpo"):
        res = search(PlanRequest(workload(stage), HW, 16))
        assert res.plans and all(p.strategy.mp == p.strategy.pp == 1 for p in res.plans), stage


def test_ppo_refuses_context_parallel():
    problems = PlanRequest(workload("ppo"), HW, 16, context_parallel=2).check()
    assert problems == ["--context-parallel 2: stage ppo runs data parallel only in mindtune (each rank rolls "
                        "out with a whole model)"]


def test_grpo_memory_is_ppo_without_the_critic():
    from mindtune.parallel.memory import Strategy, estimate_memory

    s = Strategy()
    sft, grpo, ppo = (estimate_memory(Workload(get_preset("llama2-7b"), 1024, stage=stage, peft="lora",
                                               compute_dtype="bfloat16"), s, HW) for stage in ("sft", "grpo", "ppo"))
    assert grpo.persistent["adapter"] == sft.persistent["adapter"]          # one trained adapter
    assert grpo.persistent["generator weights"] == ppo.persistent["generator weights"] > 0
    assert grpo.phases["training"]["activations"] == sft.phases["training"]["activations"]
    assert "rollout" in grpo.phases and sft.total < grpo.total < ppo.total
