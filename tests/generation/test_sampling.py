"""Host-side token choice: greedy, temperature, top-k, top-p."""
import numpy as np
import pytest

from mindtune.errors import ConfigError
from mindtune.generation.sampling import SamplingConfig, next_tokens

LOGITS = np.log(np.array([[0.5, 0.3, 0.15, 0.05], [0.05, 0.15, 0.3, 0.5]]))


def draws(config, n=4000, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([next_tokens(LOGITS, config, rng) for _ in range(n)])   # [n, 2]


def test_greedy_takes_argmax():
    assert next_tokens(LOGITS, SamplingConfig(), np.random.default_rng(0)).tolist() == [0, 3]


def test_plain_sampling_follows_the_distribution():
    freq = np.bincount(draws(SamplingConfig(greedy=False))[:, 0], minlength=4) / 4000
    np.testing.assert_allclose(freq, [0.5, 0.3, 0.15, 0.05], atol=0.03)


def test_top_k_and_top_p_restrict_the_support():
    top2 = draws(SamplingConfig(greedy=False, top_k=2))
    assert set(top2[:, 0]) == {0, 1} and set(top2[:, 1]) == {2, 3}
    # top_p 0.7: 0.5 alone is short of it, 0.5 + 0.3 reaches it -> two tokens kept, renormalised 5:3
    nucleus = draws(SamplingConfig(greedy=False, top_p=0.7))[:, 0]
    assert set(nucleus) == {0, 1}
    assert abs((nucleus == 0).mean() - 0.625) < 0.03


def test_temperature_sharpens():
    cold = draws(SamplingConfig(greedy=False, temperature=0.25))[:, 0]
    assert (cold == 0).mean() > 0.85


def test_invalid_settings():
    for bad in (dict(temperature=0.0), dict(top_k=-1), dict(top_p=0.0), dict(top_p=1.5)):
        with pytest.raises(ConfigError):
            SamplingConfig(greedy=False, **bad).check()
