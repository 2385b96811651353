"""Learning-rate schedules against hand-computed values."""
import math

import pytest

from mindtune.engine.schedule import learning_rate


def test_warmup_is_linear_from_the_first_step():
    assert learning_rate(0, 1.0, 100, warmup_steps=4) == pytest.approx(0.25)
    assert learning_rate(3, 1.0, 100, warmup_steps=4) == pytest.approx(1.0)


def test_cosine_halfway_and_end():
    # after 4 warmup steps, 96 decay steps: step 52 is halfway -> 0.5 (1 + cos(pi/2)) = 0.5
    assert learning_rate(52, 2.0, 100, warmup_steps=4) == pytest.approx(1.0)
    assert learning_rate(100, 2.0, 100, warmup_steps=4) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate(28, 1.0, 100, 4, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))


def test_linear_and_floor_and_constant():
    assert learning_rate(50, 1.0, 100, 0, "linear") == pytest.approx(0.5)
    assert learning_rate(100, 1.0, 100, 0, "linear", min_lr_ratio=0.1) == pytest.approx(0.1)
    assert learning_rate(77, 3e-4, 100, 10, "constant") == pytest.approx(3e-4)
