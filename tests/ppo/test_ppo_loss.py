"""The PPO and GRPO loss cells on a tiny network: at the rollout policy (ratio 1) PPO's policy loss is
-mean(advantage), the value loss is the plain squared error, and PPO-ptx adds exactly ptx_coef x the SFT loss. Both
cells read the actor's logits at the gathered response positions only; off the rollout policy (clipping active)
their every output equals the same formulas applied to the logits of every position."""
import dataclasses

import numpy as np
import pytest

from reference.tiny import lively_weights

B, S = 2, 12


@pytest.fixture(scope="module")
def parts():
    import mindspore as ms

    from mindtune.config.schema import PPOConfig
    from mindtune.device import resolve_profile, setup_context
    from mindtune.engine.buckets import gather_labels
    from mindtune.engine.losses import IGNORE, CausalLMLoss, token_log_probs
    from mindtune.models.build import build_llama, load_weights
    from mindtune.models.causal_lm import CausalLM
    from mindtune.models.heads import ScoreHead
    from mindtune.models.spec import get_preset
    from mindtune.stages.ppo import PPOLoss

    spec = dataclasses.replace(get_preset("tiny"), vocab_size=64)
    profile = resolve_profile()
    setup_context(profile, graph_mode=False, seed=0)
    llama = build_llama(spec, profile, S, batch_size=B)
    load_weights(llama, lively_weights(spec, seed=1))
    lm, head = CausalLM(llama), ScoreHead(spec.hidden_size, seed=1, name="value_head")
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 64, (B, S)).astype(np.int32)
    labels = np.full((B, S), IGNORE, np.int32)
    labels[:, 4:10] = ids[:, 5:11]
    t = ms.Tensor
    logits, hidden = lm(t(ids))
    logp = token_log_probs(logits / 0.7, t(labels))[0].asnumpy()
    values = head(hidden).asnumpy()
    return dict(ms=ms, lm=lm, head=head, ids=ids, labels=labels, logp=logp, values=values, rng=rng,
                PPOLoss=PPOLoss, PPOConfig=PPOConfig, CausalLMLoss=CausalLMLoss,
                gather_labels=gather_labels, token_log_probs=token_log_probs)


def gathered(p, budget=16):
    """(ids, label_at, label_ids) of the fixture's batch with room for `budget` labels (12 are used)."""
    return p["gather_labels"]((p["ids"], p["labels"]), {S: budget})


def test_loss_at_the_rollout_policy(parts):
    p = parts
    t = p["ms"].Tensor
    mask = p["labels"] != -100
    adv = p["rng"].standard_normal((B, S)).astype(np.float32) * mask
    returns = (p["values"] + 1.5).astype(np.float32)            # every value is 1.5 short of its return
    cfg = p["PPOConfig"](temperature=0.7, vf_coef=0.5, entropy_coef=0.0)
    cell = p["PPOLoss"](p["lm"], p["lm"], p["head"], cfg)
    loss, aux = cell(*(t(x) for x in gathered(p)), t(p["logp"]), t(p["values"]), t(adv), t(returns))
    policy, value, _, approx_kl, clip, vclip, ptx = (float(a.asnumpy()) for a in aux)
    assert policy == pytest.approx(-adv[mask].mean(), abs=1e-5)         # ratio 1: -A
    assert value == pytest.approx(0.5 * 1.5 ** 2, rel=1e-5)             # no clipping: v = v_old
    assert approx_kl == pytest.approx(0.0, abs=1e-10) and clip == 0.0 and vclip == 0.0 and ptx == 0.0
    assert float(loss.asnumpy()) == pytest.approx(policy + 0.5 * value, rel=1e-5)


def test_ptx_adds_the_sft_loss(parts):
    p = parts
    t = p["ms"].Tensor
    zeros = np.zeros((B, S), np.float32)
    cfg = p["PPOConfig"](temperature=0.7, vf_coef=0.0, ptx_coef=0.25)
    cell = p["PPOLoss"](p["lm"], p["lm"], p["head"], cfg)
    loss, aux = cell(*(t(x) for x in gathered(p)), t(p["logp"]), t(p["values"]), t(zeros), t(p["values"]),
                     *(t(x) for x in gathered(p, budget=B * S)))
    sft, _ = p["CausalLMLoss"](p["lm"])(*(t(x) for x in p["gather_labels"]((p["ids"], p["labels"]))))
    assert float(aux[6].asnumpy()) == pytest.approx(float(sft.asnumpy()), rel=1e-5)
    assert float(loss.asnumpy()) == pytest.approx(0.25 * float(sft.asnumpy()), rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("budget", [16, B * S])     # padded to a planned budget, and the every-position fallback
def test_ppo_loss_at_gathered_positions_equals_the_every_position_formulas(parts, budget):
    """Old log-probabilities and values off the current ones, so ratios and values clip: policy, value, entropy,
    approx-KL and clip fractions as the PPO formulas give them on the [B, S, V] logits of every position."""
    from mindtune.rlhf.losses import (clipped_policy_loss, clipped_value_loss, entropy_from_logits,
                                      masked_mean)

    p = parts
    t = p["ms"].Tensor
    mask = (p["labels"] != -100).astype(np.float32)
    old_logp = ((p["logp"] + p["rng"].normal(0, 0.3, (B, S))) * mask).astype(np.float32)
    old_values = (p["values"] + p["rng"].normal(0, 0.5, (B, S))).astype(np.float32)
    adv = (p["rng"].standard_normal((B, S)) * mask).astype(np.float32)
    returns = (p["values"] + p["rng"].normal(0, 1.0, (B, S))).astype(np.float32)
    cfg = p["PPOConfig"](temperature=0.7, vf_coef=0.5, entropy_coef=0.01, cliprange=0.1, cliprange_value=0.1)
    loss, aux = p["PPOLoss"](p["lm"], p["lm"], p["head"], cfg)(*(t(x) for x in gathered(p, budget)),
                                                             t(old_logp), t(old_values), t(adv), t(returns))
    logits, hidden = p["lm"](t(p["ids"]))
    logits = logits / 0.7
    logp, m = p["token_log_probs"](logits, t(p["labels"]))
    per_token, clipped = clipped_policy_loss(logp, t(old_logp), t(adv), m, 0.1, 0.1)
    value_tokens, value_clipped = clipped_value_loss(p["head"](hidden), t(old_values), t(returns), m, 0.1)
    want = [masked_mean(per_token, m), masked_mean(value_tokens, m), masked_mean(entropy_from_logits(logits), m),
            masked_mean(0.5 * (logp - t(old_logp)) ** 2, m), masked_mean(clipped, m), masked_mean(value_clipped, m)]
    want = [float(w.asnumpy()) for w in want]
    got = [float(a.asnumpy()) for a in aux]
    assert 0 < want[4] < 1 and 0 < want[5] < 1          # some ratios and some values are clipped
    np.testing.assert_allclose(got[:6], want, rtol=1e-5, atol=1e-6)
    assert float(loss.asnumpy()) == pytest.approx(want[0] + 0.5 * want[1] - 0.01 * want[2], rel=1e-5)


@pytest.mark.parametrize("loss_type", ["token", "sequence"])
def test_grpo_loss_at_gathered_positions_equals_the_every_position_formula(parts, loss_type):
    from mindtune.config.schema import GRPOConfig
    from mindtune.rlhf.losses import grpo_loss
    from mindtune.stages.grpo import GRPOLoss

    p = parts
    t = p["ms"].Tensor
    labels = p["labels"].copy()
    labels[1, 7:] = -100                  # responses of unequal length: the two loss types differ
    mask = (labels != -100).astype(np.float32)
    old_logp = ((p["logp"] + p["rng"].normal(0, 0.3, (B, S))) * mask).astype(np.float32)
    ref_logp = ((p["logp"] + p["rng"].normal(0, 0.3, (B, S))) * mask).astype(np.float32)
    adv = np.array([0.8, -1.3], np.float32)
    cfg = GRPOConfig(temperature=0.7, epsilon=0.1, beta=0.05, loss_type=loss_type)
    batch = p["gather_labels"]((p["ids"], labels), {S: 16})
    loss, (kl, clipped) = GRPOLoss(p["lm"], cfg)(*(t(x) for x in batch), t(old_logp), t(ref_logp), t(adv))
    logits, _ = p["lm"](t(p["ids"]))
    logp, m = p["token_log_probs"](logits / 0.7, t(labels))
    want = grpo_loss(logp, t(old_logp), t(ref_logp), t(adv), m, 0.1, 0.0, 0.05, loss_type)
    np.testing.assert_allclose([float(x.asnumpy()) for x in (loss, kl, clipped)],
                               [float(w.asnumpy()) for w in want], rtol=1e-5, atol=1e-6)
    assert 0 < float(want[2].asnumpy()) < 1


def test_grpo_loss_tokens_count_gathered_labels_and_responses():
    """The engine's weight of a GRPO micro-batch, read from its gathered labels: label tokens (loss_type token) or
    responses holding at least one (sequence); the budget's padding counts as neither."""
    from types import SimpleNamespace

    from mindtune.engine.buckets import gather_labels
    from mindtune.stages.grpo import GroupRollouts

    labels = np.full((3, S), -100, np.int32)
    labels[1, 4:10] = 7
    labels[2, 2:5] = 9                    # row 0: no label (a response cut to nothing); the padding points at it
    batch = gather_labels((np.zeros((3, S), np.int32), labels), {S: 16}) + (np.zeros(3, np.float32),)
    assert batch[1].size == 16
    count = GroupRollouts.loss_tokens
    assert count(SimpleNamespace(cfg=SimpleNamespace(loss_type="token")), batch) == 9
    assert count(SimpleNamespace(cfg=SimpleNamespace(loss_type="sequence")), batch) == 2
