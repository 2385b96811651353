"""Choosing the next token from logits on the host, with numpy: greedy, temperature, top-k, top-p.

Host-side sampling keeps the device graph fixed and makes seeded runs reproducible on CPU and Ascend alike.
"""
from dataclasses import dataclass

import numpy as np

from mindtune.errors import ConfigError


@dataclass(frozen=True)
class SamplingConfig:
    """greedy: take the most likely token (the other fields are ignored).
    temperature: divides the logits (> 0). top_k: keep the k most likely tokens (0 = all).
    top_p: keep the smallest set of most likely tokens whose probability reaches p (1.0 = all)."""
    greedy: bool = True
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def check(self):
        if not self.greedy:
            if self.temperature <= 0:
                raise ConfigError(f"temperature must be > 0 (got {self.temperature}); use greedy decoding instead")
            if self.top_k < 0:
                raise ConfigError(f"top_k must be >= 0 (got {self.top_k})")
            if not 0 < self.top_p <= 1:
                raise ConfigError(f"top_p must be in (0, 1] (got {self.top_p})")
        return self


def next_tokens(logits: np.ndarray, config: SamplingConfig, rng: np.random.Generator) -> np.ndarray:
    """One token id per row of `logits` [batch, vocab]."""
    if config.greedy:
        return logits.argmax(-1)
    logits = logits.astype(np.float64) / config.temperature
    if config.top_k and config.top_k < logits.shape[-1]:
        kth = np.partition(logits, -config.top_k, axis=-1)[:, -config.top_k][:, None]
        logits = np.where(logits < kth, -np.inf, logits)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    if config.top_p < 1.0:
        order = np.argsort(-probs, axis=-1)
        sorted_probs = np.take_along_axis(probs, order, -1)
        # keep a token while the mass before it is below top_p (the most likely token is always kept)
        keep_sorted = np.cumsum(sorted_probs, -1) - sorted_probs < config.top_p
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, -1)
        probs = np.where(keep, probs, 0.0)
        probs /= probs.sum(-1, keepdims=True)
    u = rng.random((probs.shape[0], 1))
    return np.minimum((np.cumsum(probs, -1) < u).sum(-1), probs.shape[-1] - 1)
