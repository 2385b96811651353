"""token_log_probs on the fused CPU kernel (mindtune.cpu_kernels.label_log_softmax, which
mindtune.device.setup_context gives mindtune.engine.losses.LABEL_LOG_PROBS on CPU): log p and its gradient
d logits = d * (onehot - softmax) on a hand-computed case and against MindSpore's own differentiation of
gather(log_softmax(logits)), in graph and PyNative mode, with ignored labels and an upstream gradient that
differs per position."""
import math

import numpy as np
import pytest


@pytest.fixture(scope="module", params=["graph", "pynative"])
def ms_mode(request):
    import mindspore as ms

    from mindtune.device import resolve_profile, setup_context
    from mindtune.engine.losses import LABEL_LOG_PROBS

    setup_context(resolve_profile("cpu"), graph_mode=request.param == "graph")
    assert LABEL_LOG_PROBS.fused is not None, "this machine has g++: the CPU kernels must build"
    yield ms
    ms.set_context(mode=ms.GRAPH_MODE)


def _grad(ms, fn, *args):
    value_and_grad = ms.value_and_grad(fn)
    if ms.get_context("mode") == ms.GRAPH_MODE:
        value_and_grad = ms.jit(value_and_grad)
    value, grad = value_and_grad(*args)
    return float(value), grad.asnumpy()


def test_hand_computed_two_token_vocabulary(ms_mode):
    """logits [0, ln 3]: softmax [1/4, 3/4]. Label 1: log p = ln(3/4), and the gradient of -log p is
    softmax - onehot = [1/4, -1/4]. A second row's label is ignored: log p 0, mask 0, no gradient."""
    ms = ms_mode
    from mindtune.engine.losses import IGNORE, token_log_probs

    logits = ms.Tensor(np.array([[0.0, math.log(3.0)], [5.0, -2.0]], np.float32))
    labels = ms.Tensor(np.array([1, IGNORE], np.int32))
    logp, mask = token_log_probs(logits, labels)
    np.testing.assert_allclose(logp.asnumpy(), [math.log(0.75), 0.0], atol=1e-5)
    np.testing.assert_array_equal(mask.asnumpy(), [1.0, 0.0])

    def negative_log_likelihood(x):
        return -token_log_probs(x, labels)[0].sum()

    value, grad = _grad(ms, negative_log_likelihood, logits)
    assert value == pytest.approx(-math.log(0.75), abs=1e-5)
    np.testing.assert_allclose(grad, [[0.25, -0.25], [0.0, 0.0]], atol=1e-6)


def test_gradient_equals_differentiating_log_softmax(ms_mode):
    """Random [3, 4, 11] logits (the reshape to rows and back), labels with ignored entries, each position's
    log-probability weighted differently (as PPO's advantages weigh them): the same value and gradient as
    MindSpore differentiating gather(log_softmax(logits)) itself."""
    ms = ms_mode
    from mindspore import ops

    from mindtune.engine.losses import IGNORE, token_log_probs

    rng = np.random.default_rng(0)
    logits = ms.Tensor((3 * rng.standard_normal((3, 4, 11))).astype(np.float32))
    labels_np = rng.integers(0, 11, (3, 4)).astype(np.int32)
    labels_np[0, :2] = IGNORE
    labels_np[2, 3] = IGNORE
    labels = ms.Tensor(labels_np)
    weights = ms.Tensor(rng.standard_normal((3, 4)).astype(np.float32))

    def written_out(x):
        return (token_log_probs(x, labels)[0] * weights).sum()

    def differentiated(x):
        mask = labels != IGNORE
        safe = ops.where(mask, labels, ops.zeros_like(labels))
        logp = ops.gather_elements(ops.log_softmax(x, -1), -1, safe.expand_dims(-1)).squeeze(-1)
        return (logp * mask.astype(logp.dtype) * weights).sum()

    value, grad = _grad(ms, written_out, logits)
    expected_value, expected_grad = _grad(ms, differentiated, logits)
    assert value == pytest.approx(expected_value, rel=1e-5)   # glibc's vectorised expf: within 4 ulp
    assert np.abs(expected_grad).max() > 0.1
    np.testing.assert_allclose(grad, expected_grad, atol=1e-5)
    assert not grad[0, :2].any() and not grad[2, 3].any()
