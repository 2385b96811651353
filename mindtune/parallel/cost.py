"""Step-time estimate of a strategy: compute at a stated efficiency, communication, and the pipeline bubble.

compute   = tokens per device x FLOPs per token / (peak x efficiency). A forward pass costs 2 FLOPs per matmul
            weight per token plus 4*s*h per layer for attention (QK^T and AV); the backward pass costs two
            forwards when weights are trained and one when they are frozen (only input gradients); full
            recompute adds one forward. PPO adds the scoring passes (reference, reward, old log-probs, values)
            but not generation, whose speed is memory-bound and not modelled.
bubble    = compute x (pp - 1) / m for a 1F1B pipeline with m micro-batches.
tensor    = per layer and micro-batch, 4 all-reduces (2 forward, 2 backward; 6 with full recompute) of the
            b*s*h activation over mp devices, cost 2(t-1)/t x bytes / bandwidth.
data      = gradient all-reduce over dp (or reduce-scatter + weight all-gather with optimizer sharding).
Ranks are laid out as MindSpore's device matrix does: mp innermost, then cp, then dp, pp outermost. A group
whose ranks span at most one HCCS mesh uses its links in parallel; anything wider runs at RoCE speed.
pipeline  = point-to-point sends of the b*s*h boundary activation and its gradient per micro-batch.
Data-parallel communication overlaps the backward pass (MindSpore fuses gradients into buckets and
reduces them while backward runs): only the part longer than the backward pass counts. Tensor and pipeline
communication sit on the critical path and count in full.
"""
from dataclasses import dataclass

from mindtune.parallel.hardware import Hardware, dtype_bytes
from mindtune.parallel.memory import Strategy, Workload, adapter_params, layer_params


@dataclass
class StepTime:
    compute: float
    bubble: float
    tensor_comm: float
    data_comm: float
    pipeline_comm: float

    @property
    def total(self) -> float:
        return self.compute + self.bubble + self.tensor_comm + self.data_comm + self.pipeline_comm

    def as_dict(self) -> dict:
        return {"compute_s": self.compute, "bubble_s": self.bubble, "tensor_comm_s": self.tensor_comm,
                "data_comm_s": self.data_comm, "pipeline_comm_s": self.pipeline_comm, "total_s": self.total}


def forward_flops_per_token(w: Workload) -> float:
    spec = w.spec
    matrices, _ = layer_params(spec)
    head = spec.vocab_size * spec.hidden_size if w.stage != "rm" else spec.hidden_size
    attention = 4 * w.seq_length * spec.hidden_size * spec.num_layers
    return 2 * (spec.num_layers * matrices + head) + attention


def train_flops_per_token(w: Workload, recompute: str = "none") -> float:
    """FLOPs the devices execute per trained token (hardware FLOPs: recomputation included)."""
    fwd = forward_flops_per_token(w)
    backward = 2 * fwd if w.trains_base else fwd
    backward += 6 * adapter_params(w) if not w.trains_base else 0
    extra = fwd if recompute == "full" else 0.0
    if recompute == "selective" and not w.flash_attention:
        extra = 4 * w.seq_length * w.spec.hidden_size * w.spec.num_layers
    one_model = fwd + backward + extra
    if w.stage == "ppo":
        return 2 * one_model + 4 * fwd     # actor + critic training; ref, reward, old logprobs, values
    if w.stage == "dpo":
        return one_model + fwd             # reference forward
    return one_model


def model_flops_per_token(w: Workload) -> float:
    """The useful FLOPs per token (no recomputation), for model-FLOPs utilisation."""
    return train_flops_per_token(w, "none")


def _collective(nbytes: float, n: int, stride: int, hw: Hardware, factor: float = 2.0) -> float:
    """Seconds for an all-reduce (factor 2) or reduce-scatter/all-gather (factor 1) of nbytes over n ranks
    that sit `stride` ranks apart."""
    if n <= 1:
        return 0.0
    span = (n - 1) * stride + 1
    bw = hw.link_gbps * (n - 1) if span <= hw.mesh_size else hw.inter_node_gbps
    return factor * (n - 1) / n * nbytes / (bw * 1e9)


def estimate_step_time(w: Workload, s: Strategy, hw: Hardware) -> StepTime:
    tokens_per_step = s.global_batch * w.seq_length
    flops = tokens_per_step * train_flops_per_token(w, s.recompute) / s.devices
    compute = flops / (hw.peak_tflops * 1e12 * hw.efficiency)
    bubble = compute * (s.pp - 1) / s.micro_batches if s.pp > 1 else 0.0

    c = dtype_bytes(w.compute_dtype)
    act = c * s.micro_batch_size * w.seq_length / s.cp * w.spec.hidden_size
    layers = -(-w.spec.num_layers // s.pp)
    collectives = 6 if s.recompute == "full" else 4
    models = 2 if w.stage == "ppo" else 1
    tensor = models * s.micro_batches * layers * collectives * _collective(act, s.mp, 1, hw)

    matrices, norms = layer_params(w.spec)
    stage_params = layers * (matrices / s.mp + norms) + w.spec.vocab_size * w.spec.hidden_size / s.mp
    trainable = stage_params if w.trains_base else adapter_params(w) / (s.mp * s.pp)
    grad_bytes = trainable * dtype_bytes(w.param_dtype)
    stride = s.mp * s.cp
    if s.optimizer_shard:   # reduce-scatter the gradients, all-gather the updated weights
        data = models * 2 * _collective(grad_bytes, s.dp, stride, hw, 1.0)
    else:
        data = models * _collective(grad_bytes, s.dp, stride, hw)
    pp_bw = hw.link_gbps if 2 * s.dp * stride <= hw.mesh_size else hw.inter_node_gbps
    boundary = act / (s.mp if s.seq_parallel else 1)
    pipe = models * 2 * s.micro_batches * boundary / (pp_bw * 1e9) if s.pp > 1 else 0.0
    fwd, total_flops = forward_flops_per_token(w), train_flops_per_token(w, s.recompute)
    backward = compute * max(total_flops - fwd * (2 if s.recompute == "full" else 1), 0.0) / total_flops
    data = max(data - backward, 0.0)
    return StepTime(compute, bubble, tensor, data, pipe)


def tokens_per_second_per_device(w: Workload, s: Strategy, hw: Hardware) -> float:
    return s.global_batch * w.seq_length / estimate_step_time(w, s, hw).total / s.devices
