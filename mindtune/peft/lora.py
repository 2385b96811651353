"""peft.method: lora — W x + (alpha / r) B A x on the projections named by `peft.target_modules`.

Built on MindFormers' `LoraAdapter`, which swaps the chosen `Linear` cells for MindPet `LoRADense`
(A: kaiming-uniform, B: zeros, so an untrained adapter leaves the outputs unchanged) and keeps their
parallel shard strategies. rsLoRA (Kalajdzievski 2023) scales by alpha / sqrt(r) instead.
"""
import math

import numpy as np

from mindtune.peft import Adapted

LORA_A, LORA_B = "mindpet_delta_lora_a", "mindpet_delta_lora_b"


def scaling(cfg) -> float:
    return cfg.alpha / math.sqrt(cfg.rank) if cfg.rslora else cfg.alpha / cfg.rank


def apply(lm, cfg, spec) -> Adapted:
    from mindformers.pet.pet_config import LoraConfig
    from mindformers.pet.tuners.lora_adapter import LoraAdapter

    from mindtune.errors import ConfigError

    pattern = "|".join(f"(?:{p})$" for p in cfg.target_modules)
    # LoRADense computes alpha / rank; pass the alpha that yields the requested scaling.
    lora_config = LoraConfig(lora_rank=cfg.rank, lora_alpha=scaling(cfg) * cfg.rank, lora_dropout=cfg.dropout,
                             target_modules=pattern)
    LoraAdapter.get_pet_model(lm.llama, lora_config)
    adapter = [p for p in lm.get_parameters() if p.name.endswith((LORA_A, LORA_B))]
    if not adapter:
        raise ConfigError(f"peft.target_modules: {cfg.target_modules} matched no projection; "
                          "use names like wq, wk, wv, wo, w1, w2, w3")
    names = [p.name for p in adapter]
    return Adapted(network=lm, trainable=adapter, adapter_names=names,
                   merged_weights=lambda: merge_weights(lm, cfg), info={"scaling": scaling(cfg)})


def merge_weights(lm, cfg) -> dict:
    """Base weights with every adapter folded in: W' = W + scaling * B @ A (float32)."""
    from mindtune.models.build import get_weights

    weights = get_weights(lm)
    merged = {}
    for name, value in weights.items():
        if name.endswith((LORA_A, LORA_B)):
            continue
        prefix = name[: -len("weight")]
        if name.endswith(".weight") and prefix + LORA_A in weights:
            a, b = weights[prefix + LORA_A], weights[prefix + LORA_B]
            value = (value.astype(np.float64) + scaling(cfg) * (b.astype(np.float64) @ a)).astype(np.float32)
        merged[name] = value
    return merged
