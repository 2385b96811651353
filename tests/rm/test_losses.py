"""Pairwise reward-model loss and metrics on a batch computed by hand."""
import math

import numpy as np
import pytest

import mindspore as ms

from mindtune.rlhf.losses import log_sigmoid, pairwise_loss, pairwise_metrics

# three pairs: right by 2, wrong by 1, a tie
CHOSEN = [1.0, -0.5, 0.25]
REJECTED = [-1.0, 0.5, 0.25]


def t(values):
    return ms.Tensor(np.asarray(values, np.float32))


def softplus(x):
    return math.log(1 + math.exp(x))


def test_bradley_terry_loss_by_hand():
    # -log sigmoid(d) = log(1 + e^-d) for d = 2, -1, 0
    expected = (softplus(-2.0) + softplus(1.0) + math.log(2.0)) / 3
    assert float(pairwise_loss(t(CHOSEN), t(REJECTED)).asnumpy()) == pytest.approx(expected, rel=1e-6)


def test_margin_is_subtracted_from_the_difference():
    # margins 1, 0, -1: d = 1, -1, 1
    expected = (softplus(-1.0) + softplus(1.0) + softplus(-1.0)) / 3
    got = pairwise_loss(t(CHOSEN), t(REJECTED), margin=t([1.0, 0.0, -1.0]))
    assert float(got.asnumpy()) == pytest.approx(expected, rel=1e-6)


def test_center_rewards_term():
    # (r_c + r_r)^2 = 0, 0, 0.25 -> mean 1/12, times 0.1
    base = (softplus(-2.0) + softplus(1.0) + math.log(2.0)) / 3
    got = pairwise_loss(t(CHOSEN), t(REJECTED), center_coef=0.1)
    assert float(got.asnumpy()) == pytest.approx(base + 0.1 / 12, rel=1e-6)


def test_weight_excludes_filler_pairs():
    got = pairwise_loss(t(CHOSEN), t(REJECTED), weight=t([1.0, 0.0, 1.0]))
    assert float(got.asnumpy()) == pytest.approx((softplus(-2.0) + math.log(2.0)) / 2, rel=1e-6)


def test_metrics_by_hand():
    acc, margin, mean, std = (float(x.asnumpy()) for x in pairwise_metrics(t(CHOSEN), t(REJECTED)))
    assert acc == pytest.approx(1 / 3)            # the tie does not count as right
    assert margin == pytest.approx((2.0 - 1.0 + 0.0) / 3)
    # rewards 1, -0.5, 0.25, -1, 0.5, 0.25: mean 0.5 / 6; population std sqrt(mean r^2 - mean^2)
    assert mean == pytest.approx(1 / 12, rel=1e-6)
    assert std == pytest.approx(math.sqrt(2.625 / 6 - 1 / 144), rel=1e-6)
    acc, margin, mean, _ = (float(x.asnumpy()) for x in pairwise_metrics(t(CHOSEN), t(REJECTED),
                                                                          weight=t([1.0, 1.0, 0.0])))
    assert acc == pytest.approx(0.5) and margin == pytest.approx(0.5) and mean == pytest.approx(0.0, abs=1e-7)


def test_log_sigmoid_is_finite_far_out():
    got = log_sigmoid(t([-200.0, 0.0, 200.0])).asnumpy()
    assert got == pytest.approx([-200.0, math.log(0.5), 0.0], abs=1e-6)
