"""Parallel strategies for Ascend clusters: hardware profiles, the memory and step-time models, the rules
MindFormers imposes, the planner behind `mindtune plan`, and the check `mindtune validate` applies.

MindSpore is imported only by `mindtune.parallel.context`; everything else is plain Python.
"""
import re
from typing import List

from mindtune.errors import MindtuneError
from mindtune.parallel.hardware import GB, HARDWARE, Hardware, get_hardware
from mindtune.parallel.memory import MemoryBreakdown, Strategy, Workload, estimate_memory
from mindtune.parallel.planner import Plan, PlanRequest, search, suggest
from mindtune.parallel.rules import check_strategy

__all__ = ["GB", "HARDWARE", "Hardware", "get_hardware", "MemoryBreakdown", "Strategy", "Workload",
           "estimate_memory", "Plan", "PlanRequest", "search", "suggest", "check_strategy", "check_config",
           "strategy_from_config", "workload_from_config", "resolve_spec"]

# MindFormers parameter paths of the projections a LoRA target regex may name
_PROJECTIONS = {"wq": "attention.wq", "wk": "attention.wk", "wv": "attention.wv", "wo": "attention.wo",
                "w1": "feed_forward.w1", "w2": "feed_forward.w2", "w3": "feed_forward.w3"}


def resolve_spec(path: str, overrides: dict = None):
    """The ModelSpec of a preset name or a model directory, without loading weights or a tokenizer."""
    from dataclasses import replace

    from mindtune.errors import ConfigError
    from mindtune.models.model_dir import is_model_dir, read_model_dir
    from mindtune.models.spec import PRESETS

    if path in PRESETS:
        spec = PRESETS[path]
    elif is_model_dir(path):
        spec = read_model_dir(path).spec
    else:
        raise ConfigError(f"model {path!r} is neither a preset ({', '.join(sorted(PRESETS))}) "
                          "nor a mindtune model directory")
    if overrides:
        try:
            spec = replace(spec, **overrides).check()
        except TypeError as exc:
            raise ConfigError(f"model.spec: {exc}") from None
    return spec


def lora_targets(patterns) -> tuple:
    """Which Llama projections the `peft.target_modules` regular expressions select."""
    out = []
    for name, path in _PROJECTIONS.items():
        if any(re.search(p, f"model.layers.0.{path}.weight") for p in patterns):
            out.append(name)
    return tuple(out)


def strategy_from_config(config) -> Strategy:
    p = config.parallel
    return Strategy(dp=p.data_parallel, mp=p.model_parallel, pp=p.pipeline_stage, cp=p.context_parallel,
                    micro_batch_size=config.train.batch_size,
                    micro_batches=p.micro_batch_num if p.pipeline_stage > 1 else config.train.grad_accum,
                    recompute=p.recompute, optimizer_shard=p.optimizer_shard, seq_parallel=p.use_seq_parallel,
                    vocab_emb_dp=p.vocab_emb_dp)


def config_hardware(config) -> Hardware:
    """The planning profile of a config: cpu, or the Ascend generation (auto means 910b, as in device.py)."""
    if config.device == "cpu":
        return get_hardware("cpu")
    return get_hardware("910b" if config.hardware in ("auto", "cpu") else config.hardware)


def workload_from_config(config, spec=None) -> Workload:
    from mindtune.device import resolve_profile, without_host_check

    spec = spec or resolve_spec(config.model.path, config.model.spec)
    with without_host_check():  # the workload of a config is planned anywhere
        profile = resolve_profile(config.device, config.hardware, config.train.precision)
    return Workload(spec=spec, seq_length=config.data.max_length, stage=config.stage, peft=config.peft.method,
                    lora_rank=config.peft.rank, lora_targets=lora_targets(config.peft.target_modules),
                    num_virtual_tokens=config.peft.num_virtual_tokens, param_dtype="float32",
                    compute_dtype=profile.compute_dtype, flash_attention=profile.use_flash_attention)


def check_config(config) -> List[str]:
    """Problems of a run config's parallel section (empty list: ok): the MindFormers rules, and on Ascend
    whether the estimated per-device memory fits. Each problem is one line naming the key."""
    try:
        spec = resolve_spec(config.model.path, config.model.spec)
        workload = workload_from_config(config, spec)
    except MindtuneError as exc:
        return [str(exc)]
    hw = config_hardware(config)
    s = strategy_from_config(config)
    problems = check_strategy(spec, s, hardware=hw if config.device != "cpu" else None,
                              seq_length=config.data.max_length)
    if problems or config.device == "cpu":
        return problems
    mem = estimate_memory(workload, s, hw)
    if mem.total > hw.usable_bytes:
        terms = ", ".join(f"{k} {v / GB:.1f}" for k, v in mem.rows())
        problems.append(f"parallel: estimated {mem.total / GB:.1f} GB per device exceeds the {hw.usable_gb:g} GB "
                        f"usable on a {hw.name} ({terms}); run `mindtune plan` for a strategy that fits")
    return problems
