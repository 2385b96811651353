"""The optimizer step's graph code: AdamW as one fused kernel per parameter (torch.optim.AdamW's update, with
MindFormers' AdamW state layout), and gradient unscaling and clipping."""
import mindspore as ms
from mindformers.core.optim.adamw import AdamW   # the element-wise one (core.optim.AdamW is a factory)
from mindspore import ops

_fused_step = ops.MultitypeFuncGraph("fused_adamw_step")


# one body for both kinds of weight decay: a group's Tensor, or the ungrouped optimizer's Number
@_fused_step.register("Function", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                      "Tensor", "Tensor")
@_fused_step.register("Function", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Number", "Tensor", "Tensor",
                      "Tensor", "Tensor")
def _fused_step_fn(kernel, beta1, beta2, eps, lr, decay_per_wd, weight_decay, param, gradient, exp_avg, exp_avg_sq):
    kernel(param, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay * decay_per_wd,
           ops.cast(gradient, param.dtype))
    return True


class FusedAdamW(AdamW):
    """MindFormers' AdamW (its parameter groups, `adam_m.*` / `adam_v.*` moments, global_step and learning_rate,
    so checkpoints keep their names) with the update done by MindSpore's fused AdamWeightDecay kernel.

    Why: MindFormers' update is about fifteen element-wise ops per parameter, several of them multiplications by
    shape-(1,) tensors and divisions; on CPU (mindspore 2.9.0) those kernels keep about 16 bytes per element for
    the life of the graph (measured: +1.4 GB for one 30M-element parameter, 12x its size), so a full fine-tuning
    step held several GB for the optimizer alone. The fused kernel updates the parameter and both moments in place.

    The maths is torch.optim.AdamW's. With c1 = 1 - beta1^t and c2 = 1 - beta2^t torch does
        p <- p * (1 - lr * wd) - (lr / c1) * m / (sqrt(v / c2) + eps)
    and the kernel does p <- p - lr' * (m / (sqrt(v) + eps') + wd' * p) after updating m and v the same way, so
    lr' = lr * sqrt(c2) / c1, eps' = eps * sqrt(c2) and wd' = lr * wd / lr' = wd * c1 / sqrt(c2) give the same
    update (written without dividing by lr, which may be 0).
    """

    def __init__(self, params, learning_rate, betas, eps, weight_decay=0.0):
        super().__init__(params, learning_rate=learning_rate, betas=betas, eps=eps, weight_decay=weight_decay)
        # MindFormers' construct also handles per-group learning rates and the data-parallel optimizer split
        # (optim_filter, broadcast_params); the engine uses neither (optimizer sharding is semi-auto parallel's)
        if self.is_group_lr or self.use_parallel:
            raise ValueError("FusedAdamW supports neither per-group learning rates nor the data-parallel "
                             "optimizer split")
        self.kernel = ops.AdamWeightDecay()

    def construct(self, gradients):
        lr = self.get_lr()
        weight_decay = self.get_weight_decay()
        self.assignadd(self.global_step, self.global_step_increase_tensor)
        step = ops.cast(self.global_step, ms.float32)
        c1 = 1.0 - ops.pow(self.beta1, step)
        root_c2 = ops.sqrt(1.0 - ops.pow(self.beta2, step))
        eps_t, lr_t, decay_per_wd = self.eps * root_c2, lr * root_c2 / c1, c1 / root_c2
        if self.is_group:
            return self.hyper_map(ops.partial(_fused_step, self.kernel, self.beta1, self.beta2, eps_t, lr_t,
                                              decay_per_wd),
                                  weight_decay, self._parameters, gradients, self.exp_avg, self.exp_avg_sq)
        return self.hyper_map(ops.partial(_fused_step, self.kernel, self.beta1, self.beta2, eps_t, lr_t, decay_per_wd,
                                          weight_decay),
                              self._parameters, gradients, self.exp_avg, self.exp_avg_sq)


_hyper = ops.HyperMap()


def unscale_and_clip(grads, inv_scale, max_norm, clip: bool, unscale: bool = True):
    """(grads * inv_scale, clipped to a global norm of max_norm if `clip`; whether all are finite; their norm).

    One pass over the gradients for the norm and one multiplication by a single factor (none when there is nothing
    to unscale or clip). Finite is read off the norm: an inf or NaN anywhere makes the sum of squares inf or NaN
    (so does a float32 overflow of that sum, i.e. gradients near 1e19, which is skipped like an overflow)."""
    norm = ops.sqrt(ops.addn(_hyper(_square_sum, grads))) * inv_scale
    finite = ops.isfinite(norm)
    factor = inv_scale
    if clip:
        factor = factor * ops.minimum(max_norm / (norm + 1e-6), 1.0)
    if clip or unscale:
        grads = _hyper(ops.partial(ops.mul, factor), grads)
    return grads, finite, norm


def _square_sum(grad):
    # summed along the last axis of a 2-D view and then once more: MindSpore 2.9's CPU ReduceSum over every axis of
    # a large tensor is about ten times slower (SmolLM2's 135M gradient elements: 566 ms vs 62 ms; it and
    # amp.all_finite were 1.3 s of a full fine-tuning step's optimizer update)
    rows = grad.astype(ms.float32).reshape(grad.shape[0] if grad.ndim > 1 else 1, -1)
    return (rows * rows).sum(-1).sum()
