"""The strategy planner: enumerate (dp, mp, pp, micro-batches, recompute, optimizer sharding, sequence
parallel), keep what obeys the rules and fits in memory, rank by estimated step time; when nothing fits,
find the smallest change that would."""
import itertools
from dataclasses import dataclass, field, replace
from typing import List, Optional, Sequence

from mindtune.parallel.cost import StepTime, estimate_step_time
from mindtune.parallel.hardware import GB, Hardware
from mindtune.parallel.memory import MemoryBreakdown, Strategy, Workload, estimate_memory
from mindtune.parallel.rules import check_devices, check_strategy


@dataclass
class Plan:
    strategy: Strategy
    memory: MemoryBreakdown
    time: StepTime
    usable_bytes: float
    tokens_per_step: float

    @property
    def fits(self) -> bool:
        return self.usable_bytes <= 0 or self.memory.total <= self.usable_bytes

    @property
    def tokens_per_second(self) -> float:
        """Per device."""
        return self.tokens_per_step / self.time.total / self.strategy.devices

    def parallel_section(self) -> dict:
        """The `parallel:` keys of a run config (and the batch layout under `train:`)."""
        s = self.strategy
        return {
            "parallel": {"data_parallel": s.dp, "model_parallel": s.mp, "pipeline_stage": s.pp,
                         "context_parallel": s.cp, "micro_batch_num": s.micro_batches if s.pp > 1 else 1,
                         "use_seq_parallel": s.seq_parallel, "optimizer_shard": s.optimizer_shard,
                         "recompute": s.recompute, "vocab_emb_dp": s.vocab_emb_dp},
            "train": {"batch_size": s.micro_batch_size, "grad_accum": s.micro_batches if s.pp == 1 else 1},
        }

    def to_dict(self) -> dict:
        return {**self.parallel_section(), "global_batch": self.strategy.global_batch,
                "memory_gb": self.memory.as_gb(), "memory_stage": self.memory.stage,
                "usable_gb": round(self.usable_bytes / GB, 3), "fits": self.fits,
                "step_time": {k: round(v, 4) for k, v in self.time.as_dict().items()},
                "tokens_per_second_per_device": round(self.tokens_per_second, 1)}


@dataclass
class PlanRequest:
    """What to plan for. None in a search field means "search it"."""
    workload: Workload
    hardware: Hardware
    devices: int
    global_batch: Optional[int] = None
    recompute: Optional[Sequence[str]] = None
    micro_batch_sizes: Sequence[int] = (1, 2, 4, 8)
    context_parallel: int = 1
    optimizer_shard: Optional[bool] = None

    def check(self) -> List[str]:
        problems = check_devices(self.devices, self.hardware)
        if self.workload.stage in DATA_PARALLEL_ONLY and self.context_parallel > 1:
            problems.append(f"--context-parallel {self.context_parallel}: stage {self.workload.stage} runs data "
                            "parallel only in mindtune (each rank rolls out with a whole model)")
        if self.global_batch is not None and self.global_batch < 1:
            problems.append(f"--global-batch {self.global_batch}: must be at least 1")
        if self.devices % self.context_parallel:
            problems.append(f"--context-parallel {self.context_parallel} does not divide {self.devices} devices")
        return problems


@dataclass
class SearchResult:
    plans: List[Plan]                 # feasible, best first
    considered: int                   # strategies that obeyed the rules
    closest: Optional[Plan] = None    # the smallest-memory strategy, when nothing fits
    rejected: List[str] = field(default_factory=list)   # why shapes were refused, when no strategy obeys the rules


# online RL stages: every rank generates its own rollouts with a whole copy of the model, so they are planned
# (and run) data parallel only; tensor/pipeline-parallel PPO is out of scope
DATA_PARALLEL_ONLY = ("ppo", "grpo")


def _divisors(n: int) -> List[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def candidate_strategies(req: PlanRequest):
    """Every strategy the search considers, before the rules and the memory check."""
    w, n, cp = req.workload, req.devices, req.context_parallel
    recomputes = list(req.recompute) if req.recompute else (
        ["none", "full"] if w.flash_attention else ["none", "selective", "full"])
    rest = n // cp
    for dp in _divisors(rest):
        for mp in _divisors(rest // dp):
            pp = rest // dp // mp
            if w.stage in DATA_PARALLEL_ONLY and mp * pp > 1:
                continue
            vocab_dp = not (mp > 1 and w.spec.vocab_size % mp == 0)
            shards = [req.optimizer_shard] if req.optimizer_shard is not None else (
                [False, True] if dp > 1 and w.trains_base else [False])
            seq_pars = [False, True] if mp > 1 else [False]
            for b in req.micro_batch_sizes:
                for m in _micro_batch_counts(req, dp, pp, b):
                    for rc, osh, sp in itertools.product(recomputes, shards, seq_pars):
                        yield Strategy(dp=dp, mp=mp, pp=pp, cp=cp, micro_batch_size=b, micro_batches=m,
                                       recompute=rc, optimizer_shard=bool(osh) and dp > 1, seq_parallel=sp,
                                       vocab_emb_dp=vocab_dp)


def _micro_batch_counts(req: PlanRequest, dp: int, pp: int, b: int) -> List[int]:
    if req.global_batch is not None:
        per_step = req.global_batch / (dp * b)
        return [int(per_step)] if per_step.is_integer() and per_step >= 1 else []
    # free global batch: a pipeline needs m >= pp; more micro-batches shrink its bubble
    return [pp * k for k in (1, 2, 4, 8)] if pp > 1 else [1]


def evaluate(req: PlanRequest, s: Strategy) -> Plan:
    w, hw = req.workload, req.hardware
    usable = hw.usable_bytes if hw.name != "cpu" else 0.0
    return Plan(s, estimate_memory(w, s, hw), estimate_step_time(w, s, hw), usable, s.global_batch * w.seq_length)


def search(req: PlanRequest) -> SearchResult:
    feasible, considered, closest, rejected = [], 0, None, set()
    for s in candidate_strategies(req):
        problems = check_strategy(req.workload.spec, s, devices=req.devices, hardware=req.hardware,
                                  seq_length=req.workload.seq_length, global_batch=req.global_batch)
        if problems:
            rejected.update(problems)
            continue
        considered += 1
        plan = evaluate(req, s)
        if plan.fits:
            feasible.append(plan)
        elif closest is None or plan.memory.total < closest.memory.total:
            closest = plan
    feasible.sort(key=lambda p: (-p.tokens_per_second, p.memory.total))
    return SearchResult(feasible, considered, None if feasible else closest,
                        sorted(rejected) if not considered else [])


def suggest(req: PlanRequest) -> List[str]:
    """Single changes that make something fit, most modest first: more devices, PEFT (LoRA), full recompute,
    half-precision weights, a shorter sequence."""
    w = req.workload
    out = []

    def fits(r: PlanRequest) -> Optional[Plan]:
        if r.check():
            return None
        res = search(r)
        return res.plans[0] if res.plans else None

    n_node = req.hardware.npus_per_node
    more = [d for d in (2, 4, 8) if d > req.devices] + [n_node * k for k in (2, 4, 8, 16, 32)
                                                         if n_node * k > req.devices]
    for devices in more:
        plan = fits(replace(req, devices=devices))
        if plan:
            out.append(f"use {devices} devices ({plan.strategy.short()}, "
                       f"{plan.memory.total / GB:.1f} GB per device)")
            break
    if w.trains_base:
        plan = fits(replace(req, workload=replace(w, peft="lora")))
        if plan:
            out.append(f"use LoRA (--peft lora; {plan.strategy.short()}, {plan.memory.total / GB:.1f} GB per device)")
    if req.recompute and "full" not in req.recompute:
        plan = fits(replace(req, recompute=["full"]))
        if plan:
            out.append(f"turn on full recompute ({plan.strategy.short()})")
    if w.param_dtype in ("float32", "fp32"):
        half = "float16" if w.compute_dtype == "float16" else "bfloat16"
        plan = fits(replace(req, workload=replace(w, param_dtype=half)))
        if plan:
            out.append(f"keep weights in {half} (--param-dtype; {plan.strategy.short()})")
    seq = w.seq_length // 2
    while seq >= 128:
        plan = fits(replace(req, workload=replace(w, seq_length=seq)))
        if plan:
            out.append(f"shorten the sequence to {seq} tokens ({plan.strategy.short()})")
            break
        seq //= 2
    return out
