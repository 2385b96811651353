"""peft.method: bitfit — BitFit (Ben Zaken et al. 2022): train only bias terms.

Which weights of the models mindtune trains have biases: Llama 2/3 and SmolLM2 have none at all (no linear
and no norm biases; RMSNorm has a gain only); Qwen2.5 (`qkv_bias: true`) has biases on the query, key and
value projections and nowhere else. BitFit here therefore trains the q/k/v biases of every layer: the existing
ones on a qkv_bias model, and zero-initialised ones it adds to a bias-free model (so the untrained model is
exactly the base). Added biases have the Qwen2.5 layout, so a BitFit adapter folds into a plain model
directory with `qkv_bias: true` (`mindtune merge-lora` merges it; generation uses that spec).
Everything else, the RMSNorm gains included, stays frozen.
"""
import numpy as np
from dataclasses import replace
from mindspore import Parameter, Tensor
from mindspore.ops import operations as P

from mindtune.errors import CheckpointError
from mindtune.peft import Adapted, load_saved

TARGETS = ("wq", "wk", "wv")


def add_biases(llama) -> list:
    """Give every q/k/v Linear a bias (zeros where it had none); returns the bias parameters."""
    from mindspore.parallel._utils import _is_in_auto_parallel_mode

    biases = []
    for layer in llama.model.layers:
        attention = layer.attention
        for name in TARGETS:
            linear = getattr(attention, name)
            if not linear.has_bias:
                # what MindFormers' Linear builds for has_bias=True; its construct then adds the bias
                linear.bias = Parameter(Tensor(np.zeros(linear.out_channels, np.float32),
                                               dtype=linear.param_init_type), name="bias")
                linear.bias_add = P.Add()
                if _is_in_auto_parallel_mode():   # shard the bias like the matmul's output columns
                    strategy = linear.matmul.in_strategy
                    linear.bias_add.shard(((strategy[0][0], strategy[1][0]), (strategy[1][0],)))
                linear.has_bias = True
            biases.append(linear.bias)
    return biases


def apply(lm, cfg, spec, *, saved=None, where="adapter", **_) -> Adapted:
    if lm.llama.model.layers[0].attention.qkv_concat:
        raise CheckpointError("peft.method: bitfit needs separate q/k/v projections (qkv_concat is on)")
    biases = add_biases(lm.llama)
    lm.llama.update_parameters_name()   # the new biases take the names a qkv_bias model has
    names = [p.name for p in biases]
    load_saved(lm, saved, names, where)
    return Adapted(network=lm, trainable=biases, adapter_names=names,
                   info={"added_biases": not spec.qkv_bias})


def merge_biases(spec, base: dict, saved: dict, where: str = "adapter"):
    """(spec with qkv_bias, base weights with the trained biases) — a plain model directory's contents."""
    weights = dict(base)
    for name, value in saved.items():
        if not name.endswith(tuple(f"attention.{t}.bias" for t in TARGETS)) or \
                name.replace(".bias", ".weight") not in base:
            raise CheckpointError(f"{where}: {name!r} is not a q/k/v bias of the base model")
        weights[name] = np.asarray(value, np.float32)
    needed = {n[: -len("weight")] + "bias" for n in base if n.endswith(tuple(f"attention.{t}.weight" for t in TARGETS))}
    missing = sorted(needed - set(weights))
    if missing:
        raise CheckpointError(f"{where}: adapter lacks bias(es) {', '.join(missing[:3])}")
    return replace(spec, qkv_bias=True), weights
