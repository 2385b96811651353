"""peft.method: lora — W x + (alpha / r) B A x on the projections named by `peft.target_modules`.

Built on MindFormers' `LoraAdapter`, which swaps the chosen `Linear` cells for MindPet `LoRADense`
(A: kaiming-uniform, B: zeros, so an untrained adapter leaves the outputs unchanged; dropout on the adapter's
input) and keeps their parallel shard strategies. rsLoRA (Kalajdzievski 2023) scales by alpha / sqrt(r)
instead. The adapter directory holds the A and B matrices; `mindtune merge-lora` folds them into W.
"""
import math

import numpy as np

from mindtune.errors import CheckpointError, ConfigError
from mindtune.peft import Adapted, load_saved

LORA_A, LORA_B = "mindpet_delta_lora_a", "mindpet_delta_lora_b"


def scaling(cfg) -> float:
    return cfg.alpha / math.sqrt(cfg.rank) if cfg.rslora else cfg.alpha / cfg.rank


def inject(cell, cfg):
    """Replace the Linear cells under `cell` whose attribute name matches a target pattern by LoRADense."""
    from mindformers.pet.pet_config import LoraConfig
    from mindformers.pet.tuners.lora_adapter import LoraAdapter

    pattern = "|".join(f"(?:{p})$" for p in cfg.target_modules)
    # LoRADense computes alpha / rank; pass the alpha that yields the requested scaling.
    lora_config = LoraConfig(lora_rank=cfg.rank, lora_alpha=scaling(cfg) * cfg.rank, lora_dropout=cfg.dropout,
                             target_modules=pattern)
    LoraAdapter.get_pet_model(cell, lora_config)


def apply(lm, cfg, spec, *, saved=None, where="adapter", **_) -> Adapted:
    inject(lm.llama, cfg)
    adapter = [p for p in lm.get_parameters() if p.name.endswith((LORA_A, LORA_B))]
    if not adapter:
        raise ConfigError(f"peft.target_modules: {cfg.target_modules} matched no projection; "
                          "use names like wq, wk, wv, wo, w1, w2, w3")
    names = [p.name for p in adapter]
    load_saved(lm, saved, names, where)
    return Adapted(network=lm, trainable=adapter, adapter_names=names,
                   merged_weights=lambda: merge_weights(lm, cfg), info={"scaling": scaling(cfg)})


def merge_weights(lm, cfg) -> dict:
    """Base weights of the live network with every adapter folded in (float32)."""
    from mindtune.models.build import get_weights

    weights = get_weights(lm)
    adapter = {k: weights.pop(k) for k in list(weights) if k.endswith((LORA_A, LORA_B))}
    return merge_arrays(weights, adapter, cfg)


def merge_arrays(base: dict, adapter: dict, cfg, where: str = "adapter") -> dict:
    """W' = W + scaling * B @ A for every (A, B) pair in `adapter`, computed in float64."""
    merged = dict(base)
    for name in adapter:
        if not name.endswith(LORA_A):
            continue
        prefix = name[: -len(LORA_A)]
        target = prefix + "weight"
        if target not in base or prefix + LORA_B not in adapter:
            raise CheckpointError(f"{where}: LoRA tensor {name!r} has no matching base weight or B matrix")
        a, b = adapter[name].astype(np.float64), adapter[prefix + LORA_B].astype(np.float64)
        merged[target] = (base[target].astype(np.float64) + scaling(cfg) * (b @ a)).astype(np.float32)
    return merged
