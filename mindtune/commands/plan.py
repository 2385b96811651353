"""mindtune plan --model NAME|DIR|CONFIG --devices N --hardware 910a|910b [--stage ...] [--peft ...]
[--seq-length S] [--global-batch B] [--output FILE] [--json]: propose a parallel strategy that fits."""
import json
import os
import sys

from mindtune.atomic import atomic_write
from mindtune.errors import ConfigError

STAGES = ("sft", "rm", "dpo", "ppo", "grpo")


def register(sub):
    p = sub.add_parser("plan", help="propose a semi-auto parallel strategy with a per-device memory breakdown")
    p.add_argument("--model", required=True, help="preset name, model directory, or a run config yaml")
    p.add_argument("--devices", type=int, required=True, help="NPUs in the job (whole 8-NPU servers beyond one)")
    p.add_argument("--hardware", choices=("910a", "910b"), help="default: the config's, else 910b")
    p.add_argument("--stage", choices=STAGES, help="default: the config's, else sft")
    p.add_argument("--peft", help="none, lora, prefix, ptuning, ptuning_v2, prompt, adapter, bitfit")
    p.add_argument("--lora-rank", type=int, help="default: the config's peft.rank, else 8")
    p.add_argument("--seq-length", type=int, help="tokens per sequence (default: the config's data.max_length)")
    p.add_argument("--global-batch", type=int, help="sequences per optimizer step (default: chosen by the search)")
    p.add_argument("--recompute", choices=("none", "selective", "full"), help="fix recompute instead of searching it")
    p.add_argument("--param-dtype", choices=("fp32", "fp16", "bf16"), default="fp32",
                   help="dtype of stored weights and AdamW states (mindtune builds fp32; default fp32)")
    p.add_argument("--top", type=int, default=5, help="plans to list (default 5)")
    p.add_argument("--output", help="write the best plan's parallel/train sections as a yaml to use as `base:`")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def _request(args):
    from mindtune.device import resolve_profile, without_host_check
    from mindtune.parallel import PlanRequest, Workload, get_hardware, lora_targets, resolve_spec
    from mindtune.config.schema import PEFT_METHODS

    config = None
    if args.model.endswith((".yaml", ".yml")):
        from mindtune.config import load_config
        config = load_config(args.model)
        spec = resolve_spec(config.model.path, config.model.spec)
    else:
        spec = resolve_spec(args.model)
    hardware = args.hardware or (config.hardware if config is not None and config.hardware in ("910a", "910b")
                                 else "910b")
    stage = args.stage or (config.stage if config is not None else "sft")
    peft = args.peft or (config.peft.method if config is not None else "none")
    if peft not in PEFT_METHODS:
        raise ConfigError(f"--peft {peft!r}: not one of {', '.join(PEFT_METHODS)}")
    rank = args.lora_rank or (config.peft.rank if config is not None else 8)
    targets = lora_targets(config.peft.target_modules) if config is not None else ("wq", "wk", "wv", "wo")
    seq = args.seq_length or (config.data.max_length if config is not None else None)
    if seq is None:
        raise ConfigError("--seq-length is required when --model is not a run config")
    if seq < 1 or rank < 1:
        raise ConfigError("--seq-length and --lora-rank must be positive")
    if args.top < 1:
        raise ConfigError(f"--top {args.top}: must be at least 1")
    precision = config.train.precision if config is not None else "auto"
    with without_host_check():  # planning for a cluster needs no NPU here
        profile = resolve_profile("ascend", hardware, precision)
    param_dtype = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[args.param_dtype]
    if hardware == "910a" and param_dtype == "bfloat16":
        raise ConfigError("--param-dtype bf16: the 910A has no bf16 units; use fp16 or fp32")
    workload = Workload(spec=spec, seq_length=seq, stage=stage, peft=peft, lora_rank=rank, lora_targets=targets,
                        param_dtype=param_dtype, compute_dtype=profile.compute_dtype,
                        flash_attention=profile.use_flash_attention)
    req = PlanRequest(workload, get_hardware(hardware), args.devices, global_batch=args.global_batch,
                      recompute=[args.recompute] if args.recompute else None)
    problems = req.check()
    if problems:
        raise ConfigError("; ".join(problems))
    return req


def run(args) -> int:
    from mindtune.parallel import search, suggest

    if args.output and os.path.abspath(args.output) == os.path.abspath(args.model):
        raise ConfigError(f"--output {args.output}: refusing to overwrite the input config")
    req = _request(args)
    result = search(req)
    suggestions = suggest(req) if not result.plans else []
    text = json.dumps(_as_json(req, result, suggestions, args.top), indent=2) if args.json else \
        _report(req, result, suggestions, args.top)
    try:
        print(text, flush=True)
    except BrokenPipeError:   # `mindtune plan ... | head`: the reader left; not an error
        sys.stdout = open(os.devnull, "w")
    if not result.plans:
        return 1
    if args.output:
        _write_output(args.output, result.plans[0], req, args)
        if not args.json:
            print(f"wrote {args.output}")
    return 0


def _describe(req) -> str:
    w, hw = req.workload, req.hardware
    peft = w.peft if w.peft != "lora" else f"lora r{w.lora_rank} ({','.join(w.lora_targets)})"
    batch = f"global batch {req.global_batch}" if req.global_batch else "global batch chosen by the search"
    return (f"{w.spec.num_parameters() / 1e9:.2f}B parameters, stage {w.stage}, peft {peft}, seq {w.seq_length}, "
            f"{req.devices} x {hw.name} ({hw.usable_gb:g} GB usable), {batch}, weights {w.param_dtype}, "
            f"compute {w.compute_dtype}")


def _report(req, result, suggestions, top) -> str:
    from mindtune.parallel import GB

    lines = [f"mindtune plan: {_describe(req)}"]
    if not result.plans:
        lines.append(f"no strategy fits: {result.considered} strategies obey the rules, none fits in "
                     f"{req.hardware.usable_gb:g} GB per device.")
        if result.closest is not None:
            c = result.closest
            lines.append(f"closest: {c.strategy.short()} recompute {c.strategy.recompute} needs "
                         f"{c.memory.total / GB:.1f} GB per device")
            lines += _breakdown(c)
        for why in result.rejected[:5]:
            lines.append(f"  refused: {why}")
        if suggestions:
            lines.append("smallest changes that fit:")
            lines += [f"  - {s}" for s in suggestions]
        else:
            lines.append("no single change (more devices up to 32 servers, LoRA, recompute, half-precision "
                         "weights, shorter sequence) fits")
        return "\n".join(lines)
    header = (f"{'#':>2} {'dp':>3} {'mp':>3} {'pp':>3} {'mbs x m':>8} {'global':>6} {'recompute':>9} "
              f"{'opt-shard':>9} {'seq-par':>7} {'GB/dev':>7} {'step s':>8} {'tok/s/NPU':>9}")
    lines += [header, "-" * len(header)]
    for i, p in enumerate(result.plans[:top], 1):
        s = p.strategy
        lines.append(f"{i:>2} {s.dp:>3} {s.mp:>3} {s.pp:>3} {f'{s.micro_batch_size} x {s.micro_batches}':>8} "
                     f"{s.global_batch:>6} {s.recompute:>9} {'yes' if s.optimizer_shard else 'no':>9} "
                     f"{'yes' if s.seq_parallel else 'no':>7} {p.memory.total / GB:>7.1f} {p.time.total:>8.3f} "
                     f"{p.tokens_per_second:>9.0f}")
    lines.append(f"{len(result.plans)} of {result.considered} rule-abiding strategies fit; best plan, per device "
                 f"({p_stage(result.plans[0])}):")
    lines += _breakdown(result.plans[0])
    t = result.plans[0].time
    lines.append(f"  step time {t.total:.3f} s = compute {t.compute:.3f} + bubble {t.bubble:.3f} + tensor comm "
                 f"{t.tensor_comm:.3f} + data comm {t.data_comm:.3f} + pipeline comm {t.pipeline_comm:.3f}")
    lines.append(f"Estimates assume {req.hardware.efficiency:.0%} of a {req.hardware.peak_tflops:g} TFLOPS peak; "
                 "see docs/parallel.md for the model and its checks against published runs.")
    return "\n".join(lines)


def p_stage(plan) -> str:
    return "the only pipeline stage" if plan.strategy.pp == 1 else f"the {plan.memory.stage} pipeline stage"


def _breakdown(plan):
    from mindtune.parallel import GB

    rows = [f"  {name:<26} {value / GB:8.2f} GB" for name, value in plan.memory.rows()]
    rows.append(f"  {'total':<26} {plan.memory.total / GB:8.2f} GB of {plan.usable_bytes / GB:g} usable")
    return rows


def _as_json(req, result, suggestions, top) -> dict:
    w = req.workload
    return {"model": {"parameters": w.spec.num_parameters(), "layers": w.spec.num_layers,
                      "hidden_size": w.spec.hidden_size},
            "stage": w.stage, "peft": w.peft, "seq_length": w.seq_length, "devices": req.devices,
            "hardware": req.hardware.name, "global_batch": req.global_batch,
            "fits": bool(result.plans), "considered": result.considered,
            "best": result.plans[0].to_dict() if result.plans else None,
            "plans": [p.to_dict() for p in result.plans[:top]],
            "closest": result.closest.to_dict() if result.closest else None,
            "suggestions": suggestions}


def _write_output(path, plan, req, args):
    import yaml

    section = plan.parallel_section()
    command = "mindtune plan " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "mindtune plan"
    header = (f"# Written by `{command}`\n"
              f"# {_describe(req)}\n"
              f"# estimate: {plan.memory.total / (1024 ** 3):.1f} GB per device, {plan.tokens_per_second:.0f} "
              f"tokens/s per device, global batch {plan.strategy.global_batch}\n"
              f"# Use it as `base:` of a run config, or copy these sections into one.\n")
    with atomic_write(path) as f:
        f.write(header)
        yaml.safe_dump(section, f, sort_keys=False)
