"""peft.method: adapter — Houlsby adapters (Houlsby et al. 2019): a bottleneck
h + up(gelu(down(h))) applied to the output of the attention output projection and of the FFN output projection
of every layer (`peft.adapter_modules`, default wo and w2), before the residual addition as in the paper.

Built on MindPet's `AdapterDense`, which replaces those Linear cells and keeps their frozen weight. The
up-projection starts at zero, so an untrained adapter leaves the outputs unchanged (MindPet's default random
init would not). `peft.adapter_size` is the bottleneck width. The adapter directory holds the bottleneck
weights; they cannot be folded into the Llama weights (see mindtune.peft.inference).
"""
import numpy as np
from mindspore import Tensor

from mindtune.errors import ConfigError
from mindtune.peft import Adapted, load_saved

MARK = "mindpet_delta_adapter"


def inject(cell, cfg) -> int:
    """Swap Linear cells under `cell` whose attribute name is in `peft.adapter_modules` for AdapterDense."""
    from mindformers.modules.layers import Linear
    from mindpet.delta.adapter import AdapterDense

    count = 0
    for name, child in list(cell._cells.items()):  # pylint: disable=protected-access
        if child is None:
            continue
        if name in cfg.adapter_modules and isinstance(child, Linear) and not child.expert_flag:
            dest = AdapterDense(child.in_channels, child.out_channels, has_bias=child.has_bias,
                                bottleneck_size=cfg.adapter_size, non_linearity="gelu",
                                param_init_type=child.param_init_type, compute_dtype=child.dtype)
            dest.weight, dest.matmul = child.weight, child.matmul   # the frozen base projection
            if child.has_bias:
                dest.bias, dest.bias_add = child.bias, child.bias_add
            up = dest.mindpet_delta_adapter.mindpet_delta_adapter_block.mindpet_delta_adapter_up_sampler
            for param in (up.weight, up.bias):
                param.set_data(Tensor(np.zeros(param.shape, np.float32), dtype=param.dtype))
            cell._cells[name] = dest  # pylint: disable=protected-access
            count += 1
        else:
            count += inject(child, cfg)
    return count


def apply(lm, cfg, spec, *, saved=None, where="adapter", **_) -> Adapted:
    if not inject(lm.llama, cfg):
        raise ConfigError(f"peft.adapter_modules: {cfg.adapter_modules} matched no projection; "
                          "use wo (attention output) and/or w2 (FFN output), or wq, wk, wv, w1, w3")
    lm.llama.update_parameters_name()   # names from the new cell tree, as MindFormers' LoraAdapter does
    adapter = [p for p in lm.get_parameters() if MARK in p.name]
    names = [p.name for p in adapter]
    load_saved(lm, saved, names, where)
    return Adapted(network=lm, trainable=adapter, adapter_names=names, info={"adapter_size": cfg.adapter_size})
