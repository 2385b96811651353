"""Per-device memory model of a Llama-family training step under a (dp, mp, pp, cp) strategy.

Terms (bytes, on the most loaded pipeline stage):
- trainable weights, gradients and AdamW states in the parameter dtype. MindFormers' AdamW clones its two
  moments from the parameters, so states cost 2x the parameter bytes. Optimizer sharding (MindSpore's parallel
  optimizer) splits weights and states over dp; gradients are reduce-scattered too unless several
  micro-batches (a pipeline, or gradient accumulation) keep a full accumulation buffer.
- frozen weights (the base under PEFT; the reference and reward models of DPO/PPO), split by mp and pp only.
- adapter weights with their gradients and states (small).
- activations, after Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models"),
  re-derived for the Llama block (RMSNorm, rotary, grouped-query attention, SwiGLU, no dropout) by listing what
  each backward op needs. Per layer and micro-batch of b sequences of s tokens, compute dtype bytes c, tensor
  parallel t:
      c*s*b*(2h + 2h')                two norm inputs (2h), q/k/v input and MLP input (2h')
                                      (all divided by t with sequence parallel)
    + c*s*b*(2h + 2kv + 3f + f') / t  q, k, v, attention output; SwiGLU's gate, silu(gate), up (3f) and the
                                      w2 input (f')
    + s*s*b*a*(c + 4) / t             attention scores and fp32 softmax; gone with flash attention or selective
                                      recompute (which in MindFormers' Llama recomputes exactly that core)
  h' and f' count only when the matmuls reading them train their weights: a frozen matmul's input serves
  only its weight gradient, which graph-mode autodiff prunes (PEFT keeps just what the adapter needs).
  Full recompute keeps each layer's input plus one layer's working set. A 1F1B pipeline keeps min(pp, m)
  micro-batches in flight on its first stage.
- logits on the last stage: b*s*V elements as the fp32 softmax the loss keeps for backward and its fp32
  gradient, split by mp when the vocabulary is parallel (vocab_emb_dp false).
- for PPO, the rollout's KV cache (a phase of its own: the peak is the larger of rollout and training).
- a fixed reserve for HCCL buffers and workspaces (from the hardware profile).
"""
import math
from dataclasses import dataclass, field, replace
from typing import Tuple

from mindtune.models.spec import ModelSpec
from mindtune.parallel.hardware import GB, Hardware, dtype_bytes

PEFT_NONE = "none"


@dataclass(frozen=True)
class Strategy:
    """A parallel strategy and the batch layout it runs.

    micro_batch_size: sequences per data-parallel rank per micro-batch (mindtune's `train.batch_size`).
    micro_batches: micro-batches per optimizer step: the pipeline's `micro_batch_num` when pp > 1, gradient
        accumulation (`train.grad_accum`) when pp == 1.
    """
    dp: int = 1
    mp: int = 1
    pp: int = 1
    cp: int = 1
    micro_batch_size: int = 1
    micro_batches: int = 1
    recompute: str = "none"          # none | selective | full
    optimizer_shard: bool = False
    seq_parallel: bool = False
    vocab_emb_dp: bool = True

    @property
    def devices(self) -> int:
        return self.dp * self.mp * self.pp * self.cp

    @property
    def global_batch(self) -> int:
        return self.micro_batch_size * self.dp * self.micro_batches

    def short(self) -> str:
        return (f"dp{self.dp}/mp{self.mp}/pp{self.pp}" + (f"/cp{self.cp}" if self.cp > 1 else "")
                + f" mbs{self.micro_batch_size}x{self.micro_batches}")


@dataclass(frozen=True)
class Workload:
    """What is trained: the model, the sequence length, the stage and the PEFT method, and the dtypes.

    stage: sft | rm | dpo | ppo | grpo. grpo is ppo without the critic (the reward is a rule or a frozen
        reward model, not counted here). dpo adds a frozen reference model (with PEFT: only a frozen copy of the
        adapter; the base is shared); ppo trains an actor and a critic and keeps a frozen reference and reward
        model, all of the same architecture, on every device (with PEFT all four share one frozen base), plus
        the rollout generator's copy of the actor's weights.
    rollout_batch: PPO sequences generated at once per data-parallel rank (defaults to the micro-batch size).
    """
    spec: ModelSpec
    seq_length: int
    stage: str = "sft"
    peft: str = PEFT_NONE
    lora_rank: int = 8
    lora_targets: Tuple[str, ...] = ("wq", "wk", "wv", "wo")
    num_virtual_tokens: int = 16
    param_dtype: str = "float32"
    compute_dtype: str = "bfloat16"
    flash_attention: bool = True
    rollout_batch: int = 0

    @property
    def trains_base(self) -> bool:
        return self.peft == PEFT_NONE


@dataclass
class MemoryBreakdown:
    """Per-device bytes by term. `persistent` terms live through the step; `phases` are alternatives whose
    largest one adds to the persistent total (training activations vs a PPO rollout)."""
    persistent: dict = field(default_factory=dict)
    phases: dict = field(default_factory=dict)
    stage: str = "first"             # which pipeline stage is the most loaded

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=lambda k: sum(self.phases[k].values())) if self.phases else ""

    @property
    def total(self) -> float:
        peak = max((sum(p.values()) for p in self.phases.values()), default=0.0)
        return sum(self.persistent.values()) + peak

    def rows(self):
        """(term, bytes) for display: persistent terms, then the peak phase's terms."""
        out = [(k, v) for k, v in self.persistent.items() if v]
        if self.phases:
            out += [(k, v) for k, v in self.phases[self.peak_phase].items() if v]
        return out

    def as_gb(self) -> dict:
        return {k: round(v / GB, 3) for k, v in self.rows()} | {"total": round(self.total / GB, 3)}


# -- parameter counts --------------------------------------------------------------------------------------
def layer_params(spec: ModelSpec) -> Tuple[int, int]:
    """(matrix parameters, norm parameters) of one decoder layer; matrices split under tensor parallel."""
    h, kv, f = spec.hidden_size, spec.num_kv_heads * spec.head_dim, spec.intermediate_size
    matrices = 2 * h * h + 2 * h * kv + 3 * h * f + ((h + 2 * kv) if spec.qkv_bias else 0)
    return matrices, 2 * h


def adapter_params(w: Workload) -> int:
    """Trainable parameters a PEFT method adds (whole model, before sharding)."""
    spec = w.spec
    h, kv, f, L = spec.hidden_size, spec.num_kv_heads * spec.head_dim, spec.intermediate_size, spec.num_layers
    n = w.num_virtual_tokens
    if w.peft == "lora":
        shapes = {"wq": (h, h), "wk": (h, kv), "wv": (h, kv), "wo": (h, h), "w1": (h, f), "w2": (f, h),
                  "w3": (h, f)}
        return L * sum(w.lora_rank * sum(shapes[t]) for t in w.lora_targets if t in shapes)
    if w.peft in ("prefix", "ptuning_v2"):
        return 2 * L * n * kv              # a key and a value prefix per layer
    if w.peft in ("prompt", "ptuning"):
        return n * h + (2 * h * h if w.peft == "ptuning" else 0)   # P-tuning adds a small prompt encoder
    if w.peft == "adapter":
        return L * 2 * (2 * h * 64 + h + 64)   # two bottleneck adapters (width 64) per layer
    if w.peft == "bitfit":
        return L * (3 * h + 2 * kv + 2 * f)    # one bias per projection output
    return 0


def _stage_share(spec: ModelSpec, s: Strategy, stage: str) -> dict:
    """Parameters held by one device of the `stage` ("first" or "last") pipeline stage, after mp sharding."""
    matrices, norms = layer_params(spec)
    layers = math.ceil(spec.num_layers / s.pp)
    vocab_split = 1 if s.vocab_emb_dp else s.mp
    emb = spec.vocab_size * spec.hidden_size / vocab_split
    first, last = stage == "first" or s.pp == 1, stage == "last" or s.pp == 1
    out = {"layers": layers * (matrices / s.mp + norms)}
    out["embedding"] = emb if first else 0.0
    # the output projection: its own matrix, or under pp > 1 a copy of the tied embedding on the last stage
    untied_or_split = (not spec.tie_word_embeddings) or s.pp > 1
    out["head"] = emb + spec.hidden_size if (last and untied_or_split) else 0.0
    return out


# -- activations ---------------------------------------------------------------------------------------------
def _reads_trained(w: Workload, names) -> int:
    """1 if any of these projections trains its weight (full fine-tuning, or a LoRA target)."""
    if w.trains_base:
        return 1
    return int(w.peft == "lora" and any(n in w.lora_targets for n in names))


def layer_activation_bytes(w: Workload, s: Strategy, recompute: str = None) -> float:
    """Stored activations of one decoder layer for one micro-batch (see the module docstring)."""
    recompute = s.recompute if recompute is None else recompute
    spec = w.spec
    c = dtype_bytes(w.compute_dtype)
    h, kv, f, a = spec.hidden_size, spec.num_kv_heads * spec.head_dim, spec.intermediate_size, spec.num_heads
    seq = w.seq_length / s.cp
    sb = seq * s.micro_batch_size
    t = s.mp
    qkv_in = _reads_trained(w, ("wq", "wk", "wv"))
    mlp_in = _reads_trained(w, ("w1", "w3"))
    w2_in = _reads_trained(w, ("w2",))
    replicated = c * sb * (2 + qkv_in + mlp_in) * h / (t if s.seq_parallel else 1)
    split = c * sb * (2 * h + 2 * kv + (3 + w2_in) * f) / t
    scores = 0.0
    if not w.flash_attention and recompute != "selective":
        scores = seq * w.seq_length * s.micro_batch_size * a * (c + 4) / t
    full = replicated + split + scores
    if recompute == "full":
        return c * sb * h / (t if s.seq_parallel else 1)   # only the layer input is kept
    return full


def activation_bytes(w: Workload, s: Strategy, stage: str) -> float:
    """All stored activations on a device of the given pipeline stage."""
    layers = math.ceil(w.spec.num_layers / s.pp)
    in_flight = min(s.pp, s.micro_batches) if stage == "first" and s.pp > 1 else 1
    per_mb = layers * layer_activation_bytes(w, s)
    if s.recompute == "full":   # the layer being recomputed holds its full working set once
        per_mb += layer_activation_bytes(w, s, recompute="none") / max(in_flight, 1)
    c = dtype_bytes(w.compute_dtype)
    embed_out = c * w.seq_length / s.cp * s.micro_batch_size * w.spec.hidden_size if stage == "first" else 0.0
    return in_flight * (per_mb + embed_out)


def logits_bytes(w: Workload, s: Strategy) -> float:
    """Logits (the fp32 softmax kept for backward and its fp32 gradient) of one micro-batch on the last stage.
    A reward/critic head produces one score per token instead."""
    tokens = w.seq_length / s.cp * s.micro_batch_size
    if w.stage == "rm":
        return tokens * 4 * 2
    vocab = w.spec.vocab_size / (1 if s.vocab_emb_dp else s.mp)
    return tokens * vocab * (4 + 4)


def kv_cache_bytes(w: Workload, s: Strategy) -> float:
    """PPO rollout: keys and values of every layer on this stage for the generated batch."""
    spec = w.spec
    kv = spec.num_kv_heads * spec.head_dim
    batch = w.rollout_batch or s.micro_batch_size
    layers = math.ceil(spec.num_layers / s.pp)
    return 2 * layers * kv * w.seq_length * batch * dtype_bytes(w.compute_dtype) / s.mp


# -- the whole device ----------------------------------------------------------------------------------------
def _model_states(w: Workload, s: Strategy, stage: str) -> dict:
    """Weights/gradients/optimizer (trainable base), frozen base, and adapter for ONE trained model."""
    p = dtype_bytes(w.param_dtype)
    share = sum(_stage_share(w.spec, s, stage).values())
    out = {"weights": 0.0, "gradients": 0.0, "optimizer states": 0.0, "frozen weights": 0.0, "adapter": 0.0}
    shard = s.dp if (s.optimizer_shard and s.dp > 1) else 1
    if w.trains_base:
        out["weights"] = share * p / shard
        out["optimizer states"] = 2 * share * p / shard
        # With one micro-batch per step each gradient is reduce-scattered as soon as it is computed; a
        # pipeline or gradient accumulation keeps a full accumulation buffer over the micro-batches first.
        out["gradients"] = share * p / (shard if s.micro_batches == 1 else 1)
    else:
        out["frozen weights"] = share * p
        extra = adapter_params(w) / (s.mp * s.pp)
        out["adapter"] = 4 * extra * p     # weights, gradients and two AdamW moments
    return out


def _frozen_model(w: Workload, s: Strategy, stage: str) -> float:
    return sum(_stage_share(w.spec, s, stage).values()) * dtype_bytes(w.param_dtype)


def estimate_memory(w: Workload, s: Strategy, hw: Hardware) -> MemoryBreakdown:
    """The breakdown on the most loaded pipeline stage."""
    stages = ("first", "last") if s.pp > 1 else ("first",)
    return max((_estimate_stage(w, s, hw, st) for st in stages), key=lambda b: b.total)


def _estimate_stage(w: Workload, s: Strategy, hw: Hardware, stage: str) -> MemoryBreakdown:
    states = _model_states(w, s, stage)
    persistent = dict(states)
    networks = 1                             # networks whose activations one training step keeps
    if w.stage == "ppo":
        # mindtune's PPO (stages/ppo.py, models/roles.py): actor and critic train in one graph; with a PEFT
        # method the actor, reference, critic and reward model share one frozen base (the reward model trained
        # from the same base), each with its own adapter; full fine-tuning holds a private actor and critic
        # and a frozen reference and reward model. The rollout generator keeps its own copy of the actor's
        # weights (adapter folded in) in the compute dtype.
        networks = 2
        if w.trains_base:
            for key in ("weights", "gradients", "optimizer states"):
                persistent[key] = 2 * states[key]
            persistent["reference/reward models"] = 2 * _frozen_model(w, s, stage)
        else:
            frozen_adapters = 2 * adapter_params(w) / (s.mp * s.pp) * dtype_bytes(w.param_dtype)
            persistent["adapter"] = 2 * states["adapter"] + frozen_adapters   # actor, critic; reference, reward
        persistent["generator weights"] = _frozen_model(w, s, stage) * dtype_bytes(w.compute_dtype) / \
            dtype_bytes(w.param_dtype)
    elif w.stage == "grpo":                  # no critic: the policy, a frozen reference (beta > 0), the generator
        persistent["reference model"] = _frozen_model(w, s, stage) if w.trains_base else \
            adapter_params(w) / (s.mp * s.pp) * dtype_bytes(w.param_dtype)
        persistent["generator weights"] = _frozen_model(w, s, stage) * dtype_bytes(w.compute_dtype) / \
            dtype_bytes(w.param_dtype)
    elif w.stage == "dpo":                   # with PEFT the reference is the shared base plus a frozen adapter
        persistent["reference model"] = _frozen_model(w, s, stage) if w.trains_base else \
            adapter_params(w) / (s.mp * s.pp) * dtype_bytes(w.param_dtype)
    persistent["reserve"] = hw.reserve_bytes
    train = {"activations": networks * activation_bytes(w, s, stage)}
    if stage == "last" or s.pp == 1:
        train["logits"] = logits_bytes(w, s)
    phases = {"training": train}
    if w.stage in ("ppo", "grpo"):
        phases["rollout"] = {"kv cache": kv_cache_bytes(w, s)}
    return MemoryBreakdown(persistent, phases, stage)


def with_recompute(s: Strategy, recompute: str) -> Strategy:
    return replace(s, recompute=recompute)
