"""The rules a semi-auto parallel strategy must obey before MindSpore/MindFormers will run it.

Each rule mirrors a check MindFormers makes at build or compile time (or a shape that would not split evenly),
so a bad strategy is refused before a job spends minutes compiling on a cluster. Every message is one line
and names the config key.
"""
from typing import List, Optional

from mindtune.models.spec import ModelSpec
from mindtune.parallel.hardware import Hardware
from mindtune.parallel.memory import Strategy

KEYS = {"dp": "parallel.data_parallel", "mp": "parallel.model_parallel", "pp": "parallel.pipeline_stage",
        "cp": "parallel.context_parallel", "m": "parallel.micro_batch_num"}


def check_strategy(spec: ModelSpec, s: Strategy, *, devices: Optional[int] = None,
                   hardware: Optional[Hardware] = None, seq_length: Optional[int] = None,
                   global_batch: Optional[int] = None) -> List[str]:
    """Problems of strategy `s` for model `spec` (empty list: ok)."""
    problems = []
    mp = s.mp
    if devices is not None and s.devices != devices:
        problems.append(f"parallel: data_parallel x model_parallel x context_parallel x pipeline_stage = "
                        f"{s.dp}x{s.mp}x{s.cp}x{s.pp} = {s.devices}, but there are {devices} devices")
    # tensor parallel splits heads, KV heads, the hidden and FFN widths (and the vocabulary when it is split)
    for what, size in (("num_heads", spec.num_heads), ("num_kv_heads", spec.num_kv_heads),
                       ("hidden_size", spec.hidden_size), ("intermediate_size", spec.intermediate_size)):
        if size % mp:
            problems.append(f"{KEYS['mp']}={mp}: {what} {size} is not divisible by {mp}")
    if mp > 1 and not s.vocab_emb_dp and spec.vocab_size % mp:
        problems.append(f"{KEYS['mp']}={mp}: vocab_size {spec.vocab_size} is not divisible by {mp} "
                        f"(set parallel.vocab_emb_dp=true to keep the embedding whole)")
    if hardware is not None and hardware.npus_per_node > 1 and mp > 1:
        # tensor-parallel collectives run every layer: they must stay on the server's HCCS links
        if mp > hardware.npus_per_node or hardware.npus_per_node % mp:
            problems.append(f"{KEYS['mp']}={mp}: tensor parallel must stay inside one server; use a divisor of "
                            f"its {hardware.npus_per_node} NPUs")
    if s.pp > spec.num_layers:
        problems.append(f"{KEYS['pp']}={s.pp}: more pipeline stages than the model's {spec.num_layers} layers")
    if s.pp > 1 and s.micro_batches < s.pp:
        problems.append(f"{KEYS['m']}={s.micro_batches}: must be at least pipeline_stage {s.pp} "
                        f"(every stage needs a micro-batch in flight)")
    if seq_length is not None and seq_length % s.cp:
        problems.append(f"{KEYS['cp']}={s.cp}: the sequence length {seq_length} is not divisible by {s.cp}")
    if global_batch is not None and global_batch % s.dp:
        problems.append(f"global batch {global_batch} is not divisible by {KEYS['dp']}={s.dp}")
    if s.seq_parallel and mp == 1:
        # MindFormers' Llama shards the norms and residual adds (dp, cp * mp, 1) under use_seq_parallel: the
        # sequence is split over the tensor-parallel group, which model_parallel 1 does not have
        problems.append(f"parallel.use_seq_parallel: sequence parallel splits the norm and residual activations "
                        f"along the sequence over the model_parallel group; with {KEYS['mp']}=1 there is none "
                        "(set model_parallel > 1 or use_seq_parallel=false)")
    if s.recompute not in ("none", "selective", "full"):
        problems.append(f"parallel.recompute={s.recompute!r}: must be none, selective or full")
    return problems


def check_devices(devices: int, hardware: Hardware) -> List[str]:
    """A job uses whole servers once it needs more than one."""
    if devices < 1:
        return [f"--devices {devices}: must be at least 1"]
    n = hardware.npus_per_node
    if hardware.name != "cpu" and devices > n and devices % n:
        return [f"--devices {devices}: beyond one server, use whole {n}-NPU servers ({n}, {2 * n}, {3 * n}, ...)"]
    return []
