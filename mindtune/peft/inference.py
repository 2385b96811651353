"""What generation and `mindtune merge-lora` need from a model or adapter directory, computed in numpy
(no network is built).

    spec, weights, extras = inference_weights(path)

- a plain model directory: its weights, no extras;
- lora: the base weights with W + scaling * B A folded in;
- bitfit: the base weights plus the trained q/k/v biases (on a bias-free base the returned spec has
  qkv_bias=True: the Qwen2.5 layout, which the generator and `write_model_dir` handle);
- prompt, ptuning: the base weights and extras["soft_prompt"] [P, hidden], placed before every prompt at
  positions 0..P-1;
- prefix, ptuning_v2: the base weights and extras["prefix_kv"], one (key, value) pair per layer, each
  [kv_heads, P, head_dim] (unrotated: every token attends to them, as in training);
- adapter (Houlsby): refused — its bottleneck layers cannot be folded into the Llama weights.
"""
import os

from mindtune.errors import CheckpointError

FOLDABLE = ("lora", "bitfit")


def read_adapter(resolved):
    """(PeftConfig, saved tensors) of an adapter directory."""
    from mindtune.config.schema import PeftConfig, build

    meta = resolved.model_dir.meta
    where = os.path.join(resolved.source, "mindtune_model.json")
    if "peft" not in meta or "base_model" not in meta:
        raise CheckpointError(f"{where}: adapter directory without 'peft' or 'base_model'")
    cfg = build(PeftConfig, meta["peft"], {}, prefix="peft.")
    return cfg, resolved.model_dir.weights()


def _resolve(path: str):
    from mindtune.models.convert import find_model_dir
    from mindtune.models.loading import resolve_model

    if not os.path.exists(path):
        raise CheckpointError(f"{path}: not found")
    return resolve_model(find_model_dir(path), key=path)


def _fold(resolved, seed: int):
    """(spec, weights, extras, method) for a resolved model or adapter directory."""
    import numpy as np

    from mindtune.peft.virtual import PROMPT_EMBEDDINGS

    if resolved.model_dir is None or not resolved.model_dir.is_adapter:
        return resolved.spec, resolved.base_weights(seed), {}, "none"
    cfg, saved = read_adapter(resolved)
    base = _base_weights(resolved, seed)
    spec, where = resolved.spec, resolved.source
    if cfg.method == "lora":
        from mindtune.peft.lora import merge_arrays
        return spec, merge_arrays(base, saved, cfg, where), {}, cfg.method
    if cfg.method == "bitfit":
        from mindtune.peft.bitfit import merge_biases
        spec, weights = merge_biases(spec, base, saved, where)
        return spec, weights, {}, cfg.method
    if cfg.method in ("prompt", "ptuning"):
        if PROMPT_EMBEDDINGS not in saved:
            raise CheckpointError(f"{where}: adapter lacks tensor {PROMPT_EMBEDDINGS!r}")
        prompt = np.asarray(saved[PROMPT_EMBEDDINGS], np.float32)
        if prompt.ndim != 2 or prompt.shape[1] != spec.hidden_size:
            raise CheckpointError(f"{where}: {PROMPT_EMBEDDINGS} has shape {prompt.shape}, this model needs "
                                  f"(P, hidden) = (P, {spec.hidden_size})")
        return spec, base, {"soft_prompt": prompt}, cfg.method
    if cfg.method in ("prefix", "ptuning_v2"):
        from mindtune.peft.ptuning_v2 import saved_prefixes
        kv = np.asarray(saved_prefixes(saved, cfg, spec, where), np.float32)  # (layers, 2, kv_heads, P, head_dim)
        return spec, base, {"prefix_kv": [(kv[i, 0], kv[i, 1]) for i in range(kv.shape[0])]}, cfg.method
    raise CheckpointError(f"{where}: a {cfg.method!r} adapter cannot be used for generation: its bottleneck "
                          "layers do not fold into the Llama weights and the generator has no adapter layers")


def _base_weights(resolved, seed: int) -> dict:
    """The adapter's base weights. A preset base (random weights) is redrawn with the adapter's own spec, which
    carries the run's `model.spec` overrides (the preset's spec alone would give the wrong shapes)."""
    from mindtune.models.build import random_weights
    from mindtune.models.spec import PRESETS

    meta = resolved.model_dir.meta
    if meta["base_model"] in PRESETS:
        return random_weights(resolved.spec, meta.get("base_seed", seed))
    return resolved.base_weights(seed)


def inference_weights(path: str, seed: int = 0):
    """(spec, full weights, extras) for generation from a model directory, adapter directory or run directory.
    extras: {} or {"soft_prompt": [P, hidden]} or {"prefix_kv": [(k, v) per layer, each [kv_heads, P, hd]]}."""
    spec, weights, extras, _ = _fold(_resolve(path), seed)
    return spec, weights, extras


def generation_weights(resolved, seed: int = 0) -> dict:
    """The hook `mindtune.generation.load` calls for adapter directories: full weights for the resolved spec.
    Adapters that need a soft prompt, prefixes or a different spec raise until generate passes those on."""
    spec, weights, extras, method = _fold(resolved, seed)
    if extras or spec != resolved.spec:
        need = "a soft prompt" if "soft_prompt" in extras else "prefix keys/values" if extras else \
            "q/k/v biases the base model lacks"
        raise CheckpointError(f"{resolved.source}: a {method!r} adapter needs {need}; fold it with "
                              "`mindtune merge-lora` (lora, bitfit) or use mindtune.peft.inference_weights")
    return weights


def merged_model(path: str, seed: int = 0):
    """(resolved adapter, spec, merged weights, PeftConfig) of a foldable (lora, bitfit) adapter directory."""
    resolved = _resolve(path)
    if resolved.model_dir is None or not resolved.model_dir.is_adapter:
        raise CheckpointError(f"{path}: not an adapter directory (a PEFT run's model/); nothing to merge")
    cfg, _ = read_adapter(resolved)
    if cfg.method not in FOLDABLE:
        raise CheckpointError(f"{path}: a {cfg.method!r} adapter does not fold into the base weights; "
                              f"merge supports {', '.join(FOLDABLE)}")
    spec, weights, _, _ = _fold(resolved, seed)
    return resolved, spec, weights, cfg
