"""The reward model reads its score at the last real token: padding changes nothing, and the score equals the
head applied to the independent numpy Llama's final hidden state there."""
import numpy as np
import pytest

from reference.numpy_llama import llama_logits
from reference.tiny import lively_weights

from mindtune.models.spec import PRESETS

SPEC = PRESETS["tiny"]
WEIGHTS = lively_weights(SPEC, seed=3)
RNG = np.random.default_rng(0)
SEQS = [RNG.integers(3, SPEC.vocab_size, 7).tolist(), RNG.integers(3, SPEC.vocab_size, 12).tolist()]


def reward_model(seq_length: int):
    from mindtune.device import resolve_profile, setup_context
    from mindtune.models.build import build_llama, load_weights
    from mindtune.models.causal_lm import CausalLM
    from mindtune.models.heads import RewardModel, ScoreHead

    profile = resolve_profile("cpu")
    setup_context(profile, graph_mode=True, seed=0)
    llama = build_llama(SPEC, profile, seq_length=seq_length, batch_size=2)
    load_weights(llama, WEIGHTS)
    model = RewardModel(CausalLM(llama), ScoreHead(SPEC.hidden_size, seed=1))
    model.set_train(False)
    return model


@pytest.fixture(scope="module")
def models():
    return {16: reward_model(16), 32: reward_model(32)}


def rewards(model, seq_length, seqs, last=None):
    import mindspore as ms

    from mindtune.data.preference import pad_sequences

    ids, real_last = pad_sequences(seqs, seq_length, SPEC.pad_token_id)
    last = real_last if last is None else np.asarray(last, np.int32)
    return model(ms.Tensor(ids), ms.Tensor(last)).asnumpy().astype(np.float64)


def test_padding_does_not_change_the_score(models):
    short, long = rewards(models[16], 16, SEQS), rewards(models[32], 32, SEQS)
    assert np.allclose(short, long, rtol=1e-5, atol=1e-6)
    # the check can fail: reading one position earlier gives another score
    earlier = rewards(models[16], 16, SEQS, last=[len(s) - 2 for s in SEQS])
    assert np.abs(earlier - short).min() > 1e-3


def test_score_is_the_head_on_the_last_real_hidden_state(models):
    head = models[16].head.weight.asnumpy().astype(np.float64)[0]
    # the numpy reference with an identity output projection returns the final-norm hidden states
    as_hidden = dict(WEIGHTS, **{"lm_head.weight": np.eye(SPEC.hidden_size)})
    expected = [llama_logits(as_hidden, SPEC, s)[-1] @ head for s in SEQS]
    got = rewards(models[16], 16, SEQS)
    assert np.allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_scorer_pads_the_last_batch(models):
    from mindtune.data.preference import pad_sequences
    from mindtune.stages.rm import Scorer

    seqs = SEQS + [SEQS[0][:4]]
    ids, last = pad_sequences(seqs, 16, SPEC.pad_token_id)
    got = Scorer(models[16], 2, SPEC.pad_token_id)(ids, last)
    assert len(got) == 3
    assert np.allclose(got[:2], rewards(models[16], 16, SEQS), rtol=1e-6)
    assert np.allclose(got[2], rewards(models[16], 16, [seqs[2], SEQS[1]])[0], rtol=1e-6)
