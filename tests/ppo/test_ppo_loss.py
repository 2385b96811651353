"""The PPO loss cell on a tiny network: at the rollout policy (ratio 1) the policy loss is -mean(advantage), the
value loss is the plain squared error, and PPO-ptx adds exactly ptx_coef x the SFT loss."""
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
                gather_labels=gather_labels)


def test_loss_at_the_rollout_policy(parts):
    p = parts
    t = p["ms"].Tensor
    mask = p["labels"] != -100
    adv = p["rng"].standard_normal((B, S)).astype(np.float32) * mask
    returns = (p["values"] + 1.5).astype(np.float32)            # every value is 1.5 short of its return
    cfg = p["PPOConfig"](temperature=0.7, vf_coef=0.5, entropy_coef=0.0)
    cell = p["PPOLoss"](p["lm"], p["lm"], p["head"], cfg)
    loss, aux = cell(t(p["ids"]), t(p["labels"]), t(p["logp"]), t(p["values"]), t(adv), t(returns))
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
    loss, aux = cell(t(p["ids"]), t(p["labels"]), t(p["logp"]), t(p["values"]), t(zeros), t(p["values"]),
                     t(p["ids"]), t(p["labels"]))
    sft, _ = p["CausalLMLoss"](p["lm"])(*(t(x) for x in p["gather_labels"]((p["ids"], p["labels"]))))
    assert float(aux[6].asnumpy()) == pytest.approx(float(sft.asnumpy()), rel=1e-5)
    assert float(loss.asnumpy()) == pytest.approx(0.25 * float(sft.asnumpy()), rel=1e-4, abs=1e-6)
