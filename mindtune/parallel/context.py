"""Apply a plan to MindSpore: the auto-parallel context, and the communication init under msrun.

The engine calls `init_distributed()` once per process (a no-op outside msrun), then
`apply_parallel_context(config.parallel, world_size)` before it builds the model; `mindtune.models.build`
turns the same ParallelConfig into MindFormers' `parallel_config`, which sets each operator's shard strategy.
"""
import os

from mindtune.errors import ConfigError

# MindFormers' own default: parameters smaller than this (KB) stay whole under optimizer sharding
PARALLEL_OPTIMIZER_THRESHOLD_KB = 64


def launched_world_size() -> int:
    """Workers in this job as msrun (MS_WORKER_NUM) or a rank-table launch (RANK_SIZE) announce it; 1 alone."""
    for key in ("MS_WORKER_NUM", "RANK_SIZE"):
        value = os.environ.get(key)
        if value:
            try:
                return max(int(value), 1)
            except ValueError:
                raise ConfigError(f"environment: {key}={value!r} is not an integer") from None
    return 1


def init_distributed():
    """(world size, rank). Under msrun, initialise MindSpore communication (HCCL on Ascend; the CPU backend's
    own collectives on CPU) once; alone, (1, 0) without touching MindSpore."""
    world = launched_world_size()
    if world <= 1:
        return 1, 0
    from mindspore.communication import GlobalComm, get_group_size, get_rank, init

    # Asking for the group size before init() crashes the CPU backend (SIGSEGV), so check the flag instead.
    if not GlobalComm.INITED:
        init()
    return get_group_size(), get_rank()


def parallel_mode(parallel, device_num: int) -> str:
    """stand_alone for one device; data_parallel when only dp > 1 (and no optimizer sharding);
    semi_auto_parallel otherwise, as MindFormers runs every sharded strategy."""
    if device_num <= 1:
        return "stand_alone"
    sharded = (parallel.model_parallel, parallel.pipeline_stage, parallel.context_parallel) != (1, 1, 1)
    return "semi_auto_parallel" if sharded or parallel.optimizer_shard else "data_parallel"


def context_settings(parallel, device_num: int) -> dict:
    """The keyword arguments for `mindspore.set_auto_parallel_context` (pure: testable without MindSpore)."""
    if device_num > 1 and parallel.device_num != device_num:
        raise ConfigError(f"parallel: data_parallel x model_parallel x context_parallel x pipeline_stage = "
                          f"{parallel.device_num}, but the job has {device_num} workers")
    mode = parallel_mode(parallel, device_num)
    if mode == "stand_alone":
        return {"parallel_mode": mode}
    if mode == "data_parallel":
        # each worker reads its own shard of the batch; gradients are averaged across workers
        return {"parallel_mode": mode, "device_num": device_num, "gradients_mean": True}
    settings = {
        "parallel_mode": mode, "device_num": device_num,
        # every worker sees the whole global batch and the operators' strategies slice it (MindFormers' way)
        "full_batch": True,
        # the loss is already a mean over the global batch; MindFormers keeps gradients_mean off here
        "gradients_mean": False,
        "pipeline_stages": parallel.pipeline_stage,
        "enable_parallel_optimizer": bool(parallel.optimizer_shard and parallel.data_parallel > 1),
        "search_mode": "sharding_propagation",
    }
    if settings["enable_parallel_optimizer"]:
        settings["parallel_optimizer_config"] = {"gradient_accumulation_shard": False,
                                                 "parallel_optimizer_threshold": PARALLEL_OPTIMIZER_THRESHOLD_KB}
    return settings


def apply_parallel_context(parallel, device_num: int) -> dict:
    """Reset and set MindSpore's auto-parallel context for `parallel` (a ParallelConfig) on `device_num`
    workers; returns the settings applied. Semi-auto parallel compiles on Ascend only (see docs/parallel.md)."""
    import mindspore as ms

    settings = context_settings(parallel, device_num)
    ms.reset_auto_parallel_context()
    ms.set_auto_parallel_context(**settings)
    return settings


def reset_parallel_context():
    import mindspore as ms

    ms.reset_auto_parallel_context()
