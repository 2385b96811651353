"""DPO, IPO and SimPO losses and sequence log-probabilities on small batches computed by hand."""
import math

import mindspore as ms
import numpy as np
import pytest

from mindtune.engine.buckets import gather_labels
from mindtune.engine.losses import row_label_log_probs
from mindtune.rlhf.losses import dpo_loss


def t(values, dtype=np.float32):
    return ms.Tensor(np.asarray(values, dtype))


def nls(x):  # -log sigmoid(x)
    return math.log1p(math.exp(-x))


def value(x):
    return float(x.asnumpy())


def test_dpo_at_initialisation_is_log_2_with_zero_rewards():
    logps = t([-12.0, -30.5, -7.25])
    loss, chosen, rejected = dpo_loss(logps, logps - 3.0, logps, logps - 3.0, "sigmoid", beta=0.1)
    assert value(loss) == pytest.approx(math.log(2.0), rel=1e-6)
    assert np.all(chosen.asnumpy() == 0) and np.all(rejected.asnumpy() == 0)


# two pairs: policy/reference log-probabilities of chosen and rejected
PC, PR, RC, RR = [-10.0, -4.0], [-14.0, -3.0], [-11.0, -5.0], [-12.0, -5.0]
# h = (pc - rc) - (pr - rr) = (1 - (-2), 1 - 2) = (3, -1)


def test_sigmoid_loss_rewards_and_label_smoothing_by_hand():
    loss, chosen, rejected = dpo_loss(t(PC), t(PR), t(RC), t(RR), "sigmoid", beta=0.5)
    assert value(loss) == pytest.approx((nls(1.5) + nls(-0.5)) / 2, rel=1e-6)
    np.testing.assert_allclose(chosen.asnumpy(), [0.5, 0.5])        # beta (pc - rc)
    np.testing.assert_allclose(rejected.asnumpy(), [-1.0, 1.0])     # beta (pr - rr)
    loss, _, _ = dpo_loss(t(PC), t(PR), t(RC), t(RR), "sigmoid", beta=0.5, label_smoothing=0.2)
    expected = (0.8 * nls(1.5) + 0.2 * nls(-1.5) + 0.8 * nls(-0.5) + 0.2 * nls(0.5)) / 2
    assert value(loss) == pytest.approx(expected, rel=1e-6)


def test_ipo_loss_by_hand():
    # (h - 1 / (2 beta))^2 with beta 0.25: (3 - 2)^2 = 1, (-1 - 2)^2 = 9
    loss, _, _ = dpo_loss(t(PC), t(PR), t(RC), t(RR), "ipo", beta=0.25)
    assert value(loss) == pytest.approx(5.0, rel=1e-6)
    same = t([-2.0, -3.0])
    assert value(dpo_loss(same, same, same, same, "ipo", beta=0.1)[0]) == pytest.approx(25.0, rel=1e-6)


def test_simpo_loss_is_reference_free_with_a_target_margin():
    zero = t([0.0, 0.0])
    # h = pc - pr = (4, -1); -log sigmoid(beta h - gamma) with beta 2, gamma 1: z = 7, -3
    loss, chosen, _ = dpo_loss(t(PC), t(PR), zero, zero, "simpo", beta=2.0, gamma=1.0)
    assert value(loss) == pytest.approx((nls(7.0) + nls(-3.0)) / 2, rel=1e-6)
    np.testing.assert_allclose(chosen.asnumpy(), [-20.0, -8.0])


def test_filler_pairs_carry_no_weight():
    loss, _, _ = dpo_loss(t(PC), t(PR), t(RC), t(RR), "sigmoid", beta=0.5, weight=t([0.0, 1.0]))
    assert value(loss) == pytest.approx(nls(-0.5), rel=1e-6)


def test_sequence_log_probs_mask_and_simpo_length_normalisation():
    # vocabulary 2, uniform logits (a zero output projection): every labelled token has log-probability log(1/2)
    labels = np.array([[-100, 1, 0, 1, -100], [-100, -100, -100, 0, -100]], np.int32)
    _, label_at, label_ids = gather_labels((None, labels), {5: 16})     # 4 labels padded to 16
    head = ms.nn.Dense(3, 2, weight_init="zeros", has_bias=False)
    total, count = row_label_log_probs(t(np.ones((2, 5, 3))), head, t(label_at, np.int32), t(label_ids, np.int32))
    total, count = total.asnumpy(), count.asnumpy()
    np.testing.assert_array_equal(count, [3, 1])                         # the padding adds nothing
    mean = total / count
    np.testing.assert_allclose(total, [3 * math.log(0.5), math.log(0.5)], rtol=1e-5)
    np.testing.assert_allclose(mean, [math.log(0.5), math.log(0.5)], rtol=1e-5)   # length no longer matters
    # SimPO on these: equal per-token log-probabilities -> the loss is -log sigmoid(-gamma) whatever the lengths
    loss, _, _ = dpo_loss(t(mean[:1]), t(mean[1:]), t([0.0]), t([0.0]), "simpo", beta=2.0, gamma=0.5)
    assert value(loss) == pytest.approx(nls(-0.5), rel=1e-6)
    loss, _, _ = dpo_loss(t(total[:1]), t(total[1:]), t([0.0]), t([0.0]), "simpo", beta=2.0, gamma=0.5)
    assert value(loss) != pytest.approx(nls(-0.5), rel=1e-3)   # summed, the longer response is penalised
