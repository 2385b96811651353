"""Rollouts: the layout the training network reads, the pad token never sampled, and the policy's
log-probabilities at the sampling temperature equal across the generator, the training network and the numpy
reference Llama."""
import dataclasses

import numpy as np
import pytest

from reference.numpy_llama import llama_logits
from reference.tiny import lively_weights

SPEC = None
PROMPTS = [[5, 17, 33, 9], [40, 41], [7, 8, 9, 10, 11, 12]]
NEW, SEQ = 6, 16


@pytest.fixture(scope="module")
def setup():
    from mindtune.device import resolve_profile, setup_context
    from mindtune.generation import Generator
    from mindtune.models.build import build_llama, load_weights
    from mindtune.models.causal_lm import CausalLM
    from mindtune.models.spec import get_preset

    global SPEC
    SPEC = dataclasses.replace(get_preset("tiny"), vocab_size=96)
    profile = resolve_profile()
    setup_context(profile, graph_mode=True, seed=0)
    weights = lively_weights(SPEC, seed=3)
    llama = build_llama(SPEC, profile, SEQ, batch_size=len(PROMPTS))
    load_weights(llama, weights)
    return weights, Generator(SPEC, weights, profile, batch_size=4), CausalLM(llama)


def _sample(gen, temperature, seed=0, pad=None, eos=(2,)):
    from mindtune.generation import SamplingConfig
    from mindtune.rlhf.rollout import sample

    sampling = SamplingConfig(greedy=temperature is None, temperature=temperature or 1.0)
    return sample(gen, PROMPTS, sampling, NEW, [seed, 1], list(eos), SPEC.pad_token_id if pad is None else pad,
                  SEQ)


def test_layout_prompt_response_then_pad(setup):
    from mindtune.engine.losses import IGNORE

    _, gen, _ = setup
    r = _sample(gen, 1.0)
    for i, prompt in enumerate(PROMPTS):
        resp, p = r.responses[i], len(prompt)
        assert r.input_ids[i, :p].tolist() == prompt
        assert r.input_ids[i, p:p + len(resp)].tolist() == resp
        assert (r.input_ids[i, p + len(resp):] == SPEC.pad_token_id).all()
        # the label at position t is the token at t + 1, on response tokens only
        assert r.labels[i, p - 1:p - 1 + len(resp)].tolist() == resp
        assert (r.labels[i, :p - 1] == IGNORE).all() and (r.labels[i, p - 1 + len(resp):] == IGNORE).all()
        assert r.last_index[i] == p + len(resp) - 1
        assert r.ended[i] == (resp[-1] == 2)


def test_the_pad_token_is_never_sampled(setup):
    _, gen, _ = setup
    greedy = _sample(gen, None, eos=())
    common = np.bincount(np.concatenate(greedy.responses)).argmax()      # the model's favourite token
    assert (greedy.input_ids[:, 8:] == common).any()
    banned = _sample(gen, None, pad=int(common), eos=())
    assert all(int(common) not in r for r in banned.responses)


@pytest.mark.parametrize("temperature", [None, 0.7])
def test_logprobs_generator_training_network_and_numpy_agree(setup, temperature):
    import mindspore as ms

    from mindtune.engine.losses import token_log_probs

    weights, gen, lm = setup
    r = _sample(gen, temperature, seed=5)
    t = temperature or 1.0
    logits, _ = lm(ms.Tensor(r.input_ids))
    train, _ = token_log_probs(logits / t, ms.Tensor(r.labels))
    train = train.asnumpy()
    mask = r.mask > 0
    np.testing.assert_allclose(r.gen_logprobs[mask], train[mask], atol=2e-5)
    for i, prompt in enumerate(PROMPTS):
        ids = r.input_ids[i, :r.last_index[i] + 1]
        z = llama_logits(weights, SPEC, ids) / t
        logp = z - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)) - z.max(-1, keepdims=True)
        p = len(prompt)
        expect = logp[np.arange(p - 1, len(ids) - 1), ids[p:]]
        np.testing.assert_allclose(train[i, p - 1:len(ids) - 1], expect, atol=2e-5)
    if temperature is not None:   # the temperature is applied: log-probabilities at T=1 differ
        plain, _ = token_log_probs(logits, ms.Tensor(r.labels))
        assert np.abs(plain.asnumpy()[mask] - train[mask]).max() > 1e-2


def test_same_seed_same_rollout(setup):
    _, gen, _ = setup
    a, b, c = _sample(gen, 1.0, seed=9), _sample(gen, 1.0, seed=9), _sample(gen, 1.0, seed=10)
    assert a.responses == b.responses and a.responses != c.responses


def test_reward_inputs_append_the_turn_suffix_after_eos():
    from mindtune.engine.losses import IGNORE
    from mindtune.rlhf.rollout import Rollout, reward_inputs

    ids = np.array([[5, 6, 7, 2, 0, 0], [5, 6, 7, 8, 9, 0]], np.int32)
    r = Rollout(ids, np.full_like(ids, IGNORE), np.array([3, 4], np.int32), np.array([True, False]),
                np.zeros(ids.shape, np.float32), [[7, 2], [7, 8, 9]], np.arange(2))
    out, last = reward_inputs(r, [11])
    assert out.tolist() == [[5, 6, 7, 2, 11, 0], [5, 6, 7, 8, 9, 0]] and last.tolist() == [4, 4]
