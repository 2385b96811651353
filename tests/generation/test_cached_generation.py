"""The KV-cache generator against the uncached training network and the numpy reference, on a tiny model."""
import numpy as np
import pytest

from reference.numpy_llama import llama_logits
from reference.tiny import lively_weights

from mindtune.generation import Generator, SamplingConfig
from mindtune.models.spec import PRESETS

SPEC = PRESETS["tiny"]
PROMPTS = [[5, 9, 33, 7, 100, 3, 71], [44, 12], [300, 301, 17, 8, 9, 250, 11, 400, 5, 6, 77, 90, 13]]
NEW = 12


def numpy_greedy(weights, prompt, n, prefix_kv=None):
    seq, logps = list(prompt), []
    for _ in range(n):
        logits = llama_logits(weights, SPEC, seq, prefix_kv)[-1]
        seq.append(int(logits.argmax()))
        logps.append(-np.log(np.exp(logits - logits.max()).sum()))  # log-softmax of the argmax
    return seq[len(prompt):], np.array(logps)


@pytest.fixture(scope="module")
def setup():
    from mindtune.device import resolve_profile, setup_context

    profile = resolve_profile("cpu")
    setup_context(profile, graph_mode=True, seed=0)
    weights = lively_weights(SPEC, seed=7)
    return profile, weights, Generator(SPEC, weights, profile, batch_size=4, len_multiple=8)


def test_cached_equals_uncached_and_numpy(setup):
    from mindtune.device import resolve_profile  # noqa: F401  (context set by the fixture)
    from mindtune.generation.uncached import greedy_uncached
    from mindtune.models.build import build_llama, load_weights
    from mindtune.models.causal_lm import CausalLM

    profile, weights, gen = setup
    out = gen.generate(PROMPTS, NEW, eos_ids=[])
    assert out.tokens.shape == (3, NEW) and out.lengths.tolist() == [NEW] * 3
    assert len({t for row in out.rows() for t in row}) > 5, "degenerate model: the test would prove little"

    llama = build_llama(SPEC, profile, seq_length=32, batch_size=3)
    load_weights(llama, weights)
    uncached = greedy_uncached(CausalLM(llama), PROMPTS, NEW, 32, SPEC.pad_token_id)
    assert out.rows() == uncached

    for row, prompt in enumerate(PROMPTS):
        tokens, logps = numpy_greedy(weights, prompt, NEW)
        assert out.rows()[row] == tokens
        np.testing.assert_allclose(out.logprobs[row], logps, rtol=1e-4, atol=1e-5)


def test_eos_stops_each_row(setup):
    _, _, gen = setup
    full = gen.generate(PROMPTS, NEW, eos_ids=[])
    eos = int(full.tokens[1, 3])                 # row 1 stops at its 4th token (other rows may stop earlier too)
    out = gen.generate(PROMPTS, NEW, eos_ids=[eos])
    for row in range(3):
        hits = np.nonzero(full.tokens[row] == eos)[0]
        expect = int(hits[0]) + 1 if len(hits) else NEW
        assert out.lengths[row] == expect
        assert out.rows()[row] == full.tokens[row, :expect].tolist()
        assert (out.tokens[row, expect:] == SPEC.pad_token_id).all()


def test_sampling_is_seeded_and_top_k_1_is_greedy(setup):
    _, _, gen = setup
    hot = SamplingConfig(greedy=False, temperature=1.5)
    a = gen.generate(PROMPTS, NEW, hot, seed=1, eos_ids=[])
    b = gen.generate(PROMPTS, NEW, hot, seed=1, eos_ids=[])
    c = gen.generate(PROMPTS, NEW, hot, seed=2, eos_ids=[])
    assert a.rows() == b.rows()
    assert a.rows() != c.rows()
    top1 = gen.generate(PROMPTS, NEW, SamplingConfig(greedy=False, temperature=0.7, top_k=1), seed=3, eos_ids=[])
    assert top1.rows() == gen.generate(PROMPTS, NEW, eos_ids=[]).rows()


def test_more_prompts_than_batch_and_update_weights(setup):
    profile, weights, gen = setup
    prompts = PROMPTS * 2                         # 6 rows through a batch of 4: two device batches
    before = gen.generate(prompts, 6, eos_ids=[])
    assert before.rows()[:3] == before.rows()[3:]
    decoder = gen._decoder
    other = lively_weights(SPEC, seed=8)
    gen.update_weights(other)
    try:
        assert gen._decoder is decoder            # same compiled cell, new parameter values
        after = gen.generate(PROMPTS, 6, eos_ids=[])
        assert after.rows() == [numpy_greedy(other, p, 6)[0] for p in PROMPTS]
        assert after.rows() != before.rows()[:3]
    finally:
        gen.update_weights(weights)


def test_soft_prompt_and_prefix_kv(setup):
    _, weights, gen = setup
    emb = weights["model.tok_embeddings.embedding_weight"]
    virtual = [21, 22, 23]
    # soft prompt given as embeddings of real tokens == those tokens written before the prompt
    soft = gen.generate(PROMPTS, 6, soft_prompt=emb[virtual], eos_ids=[])
    assert soft.rows() == gen.generate([virtual + p for p in PROMPTS], 6, eos_ids=[]).rows()

    rng = np.random.default_rng(0)
    shape = (SPEC.num_kv_heads, 5, SPEC.head_dim)
    prefix = [(rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape).astype(np.float32))
              for _ in range(SPEC.num_layers)]
    out = gen.generate(PROMPTS, 6, prefix_kv=prefix, eos_ids=[])
    assert out.rows() == [numpy_greedy(weights, p, 6, prefix)[0] for p in PROMPTS]
    assert out.rows() != gen.generate(PROMPTS, 6, eos_ids=[]).rows()


def test_bad_requests_raise_config_errors(setup):
    from mindtune.errors import ConfigError

    _, _, gen = setup
    with pytest.raises(ConfigError, match="outside the vocabulary"):
        gen.generate([[1, SPEC.vocab_size]], 2)
    with pytest.raises(ConfigError, match="temperature"):
        gen.generate(PROMPTS, 2, SamplingConfig(greedy=False, temperature=0))
    with pytest.raises(ConfigError, match="prompt 0 is empty"):
        gen.generate([[]], 2)
