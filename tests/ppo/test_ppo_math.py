"""PPO's maths on small hand-computed cases: KL sign and estimators, per-token rewards, GAE against a plain loop,
whitening with a mask, both sides of the policy clip, the value clip, the adaptive KL controller."""
import math

import numpy as np
import pytest

from mindtune.rlhf import advantages as adv


def test_kl_penalty_lowers_the_reward_when_the_policy_moves_away():
    mask = np.array([[1.0, 1.0, 0.0]])
    ref = np.log(np.array([[0.5, 0.5, 0.5]]))
    same = adv.token_rewards(np.array([2.0]), adv.kl_per_token(ref, ref), mask, kl_coef=0.1)
    moved = adv.token_rewards(np.array([2.0]), adv.kl_per_token(np.log([[0.9, 0.9, 0.9]]), ref), mask, 0.1)
    # actor == reference: the score alone, on the last response action
    np.testing.assert_array_equal(same, [[0.0, 2.0, 0.0]])
    # more likely than the reference: log(0.9/0.5) = 0.5878 per token, times -0.1
    np.testing.assert_allclose(moved, [[-0.058779, 2.0 - 0.058779, 0.0]], atol=1e-6)
    assert moved.sum() < same.sum()


def test_k1_and_k3_estimators():
    logp, ref = np.array([np.log(0.2), np.log(0.6)]), np.array([np.log(0.4), np.log(0.3)])
    np.testing.assert_allclose(adv.kl_per_token(logp, ref, "k1"), [math.log(0.5), math.log(2.0)])
    # k3 = r - 1 - log r with r = ref / p: r = 2 -> 1 - log 2; r = 0.5 -> -0.5 + log 2
    np.testing.assert_allclose(adv.kl_per_token(logp, ref, "k3"), [1 - math.log(2), -0.5 + math.log(2)])
    assert (adv.kl_per_token(logp, ref, "k1") < 0).any() and (adv.kl_per_token(logp, ref, "k3") >= 0).all()


def test_kl_estimate_tensor_twin_matches_numpy():
    import mindspore as ms

    from mindtune.rlhf.losses import kl_estimate

    logp, ref = np.log([[0.2, 0.6, 0.1]]).astype(np.float32), np.log([[0.4, 0.3, 0.1]]).astype(np.float32)
    for estimator in ("k1", "k3"):
        got = kl_estimate(ms.Tensor(logp), ms.Tensor(ref), estimator).asnumpy()
        np.testing.assert_allclose(got, adv.kl_per_token(logp, ref, estimator), rtol=1e-5, atol=1e-6)


def test_score_goes_on_the_last_real_action_not_on_padding():
    # row 0 ends with EOS at position 3 (its last action); positions 4-5 are padding after it
    mask = np.array([[0, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1]], np.float32)
    rewards = adv.token_rewards(np.array([1.0, -1.0]), np.zeros((2, 6)), mask, 0.0)
    np.testing.assert_array_equal(rewards, [[0, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, -1]])


def _gae_loop(rewards, values, gamma, lam):
    """The textbook recursion over one response: A_t = sum_l (gamma lam)^l delta_{t+l}."""
    n = len(rewards)
    deltas = [rewards[t] + gamma * (values[t + 1] if t + 1 < n else 0.0) - values[t] for t in range(n)]
    return [sum((gamma * lam) ** l * deltas[t + l] for l in range(n - t)) for t in range(n)]


def test_gae_equals_the_plain_loop_with_prompt_and_eos_in_the_middle():
    rng = np.random.default_rng(0)
    rewards, values = rng.standard_normal((2, 8)), rng.standard_normal((2, 8))
    # row 0: prompt at 0-1, response 2-4 (EOS at 4), padding after; row 1: response 1-7
    mask = np.zeros((2, 8))
    mask[0, 2:5] = 1
    mask[1, 1:8] = 1
    got, returns = adv.gae(rewards, values, mask, gamma=0.9, lam=0.8)
    for row, (lo, hi) in enumerate([(2, 5), (1, 8)]):
        expect = _gae_loop(rewards[row, lo:hi], values[row, lo:hi], 0.9, 0.8)
        np.testing.assert_allclose(got[row, lo:hi], expect, rtol=1e-12)
        np.testing.assert_allclose(returns[row, lo:hi], np.array(expect) + values[row, lo:hi])
    assert not got[0, 5:].any() and not got[0, :2].any() and not returns[0, 5:].any()


def test_gae_hand_computed():
    # two actions, gamma 1, lambda 1: A_1 = r_1 - v_1; A_0 = r_0 + v_1 - v_0 + A_1 = r_0 + r_1 - v_0
    got, _ = adv.gae(np.array([[0.5, 2.0]]), np.array([[1.0, 0.25]]), np.ones((1, 2)), 1.0, 1.0)
    np.testing.assert_allclose(got, [[1.5, 1.75]])


def test_whiten_uses_only_masked_entries():
    x = np.array([[1.0, 2.0, 3.0, 100.0]])
    mask = np.array([[1.0, 1.0, 1.0, 0.0]])
    out = adv.whiten(x, mask)
    # mean 2, unbiased std 1 over the first three
    np.testing.assert_allclose(out, [[-1.0, 0.0, 1.0, 0.0]], atol=1e-6)


def test_adaptive_kl_controller():
    ctl = adv.KLController(0.1, adaptive=True, target=6.0, horizon=10000)
    # KL 12 is twice the target: error clipped to 0.2; coef *= 1 + 0.2 * 64 / 10000
    assert ctl.update(12.0, 64) == pytest.approx(0.1 * (1 + 0.2 * 64 / 10000))
    ctl = adv.KLController(0.1, adaptive=True, target=6.0, horizon=100)
    assert ctl.update(3.0, 10) == pytest.approx(0.1 * (1 - 0.2 * 10 / 100))   # 3/6 - 1 = -0.5 -> -0.2
    assert adv.KLController(0.1).update(100.0, 64) == 0.1                       # fixed


def test_normalised_scores_are_clipped():
    np.testing.assert_allclose(adv.normalise_scores(np.array([3.0, 30.0, -30.0]), 1.0, 2.0, 5.0), [1.0, 5.0, -5.0])


def _policy_loss(logp, old, a, clip):
    import mindspore as ms

    from mindtune.rlhf.losses import clipped_policy_loss

    t = lambda x: ms.Tensor(np.array([x], np.float32))  # noqa: E731
    loss, clipped = clipped_policy_loss(t(logp), t(old), t(a), t([1.0] * len(logp)), clip, clip)
    return loss.asnumpy()[0], clipped.asnumpy()[0]


def test_policy_clip_on_both_sides():
    r_up, r_down = math.log(1.5), math.log(0.5)
    # positive advantage, ratio 1.5 > 1.2: the clipped (smaller) objective wins: loss = -A * 1.2
    loss, clipped = _policy_loss([r_up], [0.0], [2.0], 0.2)
    assert loss[0] == pytest.approx(-2.4, rel=1e-5) and clipped[0] == 1.0
    # positive advantage, ratio 0.5: no clip (pessimistic bound is the unclipped -A * 0.5)
    loss, clipped = _policy_loss([r_down], [0.0], [2.0], 0.2)
    assert loss[0] == pytest.approx(-1.0, rel=1e-5) and clipped[0] == 0.0
    # negative advantage, ratio 0.5 < 0.8: clipped side -A * 0.8 = 1.6 is larger -> taken
    loss, clipped = _policy_loss([r_down], [0.0], [-2.0], 0.2)
    assert loss[0] == pytest.approx(1.6, rel=1e-5) and clipped[0] == 1.0
    # negative advantage, ratio 1.5: unclipped -A * 1.5 = 3.0
    loss, clipped = _policy_loss([r_up], [0.0], [-2.0], 0.2)
    assert loss[0] == pytest.approx(3.0, rel=1e-5) and clipped[0] == 0.0


def test_value_clip():
    import mindspore as ms

    from mindtune.rlhf.losses import clipped_value_loss

    t = lambda x: ms.Tensor(np.array([x], np.float32))  # noqa: E731
    # v moved from 0 to 1, clip 0.2 -> clipped value 0.2; return 2: max(0.5*1, 0.5*3.24) = 1.62
    loss, clipped = clipped_value_loss(t([1.0]), t([0.0]), t([2.0]), t([1.0]), 0.2)
    assert loss.asnumpy()[0, 0] == pytest.approx(1.62, rel=1e-5) and clipped.asnumpy()[0, 0] == 1.0
    # return -1: plain 0.5*4 = 2 > clipped 0.5*1.44 -> 2, not clipped
    loss, clipped = clipped_value_loss(t([1.0]), t([0.0]), t([-1.0]), t([1.0]), 0.2)
    assert loss.asnumpy()[0, 0] == pytest.approx(2.0, rel=1e-5) and clipped.asnumpy()[0, 0] == 0.0


def test_entropy_of_uniform_and_peaked():
    import mindspore as ms

    from mindtune.rlhf.losses import entropy_from_logits

    logits = ms.Tensor(np.array([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1e4, -1e4]], np.float32))
    np.testing.assert_allclose(entropy_from_logits(logits).asnumpy(), [math.log(4), math.log(2)], rtol=1e-5)
