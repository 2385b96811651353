"""Virtual tokens against the independent numpy Llama (tests/reference): per-layer prefixes (prefix tuning and
P-tuning v2 share this path) widen the attention mask by the prompt length and are seen by every real token;
soft prompts (prompt tuning, P-tuning v1) sit at positions 0..P-1; in both, the logits of the real tokens do
not depend on how much right padding follows them."""
import numpy as np
import pytest

from peft_helpers import SPEC, base_weights, build_lm, rel_err

from mindtune.config.schema import PeftConfig

LENGTHS = (6, 3)      # real tokens per row; the rest of each row is padding


@pytest.fixture(scope="module")
def weights():
    return base_weights()


def _rows(seq):
    rng = np.random.default_rng(4)
    ids = np.zeros((len(LENGTHS), seq), np.int32)
    for b, n in enumerate(LENGTHS):
        ids[b, :n] = rng.integers(3, SPEC.vocab_size, n)
    return ids


@pytest.fixture(scope="module")
def lms(weights):
    """Base networks for two amounts of padding (the prefix methods add no positions)."""
    return {seq: build_lm(weights, seq=seq) for seq in (8, 12)}


# both methods load saved prefixes through the same plain-prefix path; each is checked at one prompt length
@pytest.mark.parametrize("method, num_virtual", [("prefix", 1), ("ptuning_v2", 4)])
def test_prefix_widens_the_mask_by_its_length_and_ignores_padding(weights, lms, method, num_virtual):
    import mindspore as ms

    from reference.numpy_llama import llama_logits

    from mindtune.peft import apply_peft
    from mindtune.peft.virtual import PREFIX_KV

    rng = np.random.default_rng(num_virtual)
    kv = rng.standard_normal((SPEC.num_layers, 2, SPEC.num_kv_heads, num_virtual, SPEC.head_dim)).astype(np.float32)
    layers = [(kv[i, 0], kv[i, 1]) for i in range(SPEC.num_layers)]
    cfg = PeftConfig(method=method, num_virtual_tokens=num_virtual)
    outputs = {}
    for seq, lm in lms.items():
        adapted = apply_peft(lm, cfg, SPEC, saved={PREFIX_KV: kv})
        outputs[seq] = adapted.network(ms.Tensor(_rows(seq)))[0].asnumpy()
    for b, n in enumerate(LENGTHS):
        ids = _rows(8)[b, :n]
        ref = llama_logits(weights, SPEC, ids, prefix_kv=layers)            # unpadded, P visible columns
        for seq in lms:
            assert rel_err(outputs[seq][b, :n], ref) < 1e-5, (seq, b)
        np.testing.assert_allclose(outputs[8][b, :n], outputs[12][b, :n], rtol=1e-5, atol=1e-5)
        # the prefix matters (a model without it, or with a hidden prefix, gives other logits)
        assert rel_err(llama_logits(weights, SPEC, ids), ref) > 1e-2


@pytest.mark.parametrize("seq", [8, 12])
def test_soft_prompt_precedes_the_tokens_and_ignores_padding(weights, seq):
    """A soft prompt equal to the embeddings of tokens v behaves exactly like the text v + ids."""
    import mindspore as ms

    from reference.numpy_llama import llama_logits

    from mindtune.peft import apply_peft
    from mindtune.peft.virtual import PROMPT_EMBEDDINGS

    virtual = np.array([5, 9, 11])
    cfg = PeftConfig(method="prompt", num_virtual_tokens=len(virtual))
    saved = {PROMPT_EMBEDDINGS: weights["model.tok_embeddings.embedding_weight"][virtual]}
    adapted = apply_peft(build_lm(weights, cfg, seq=seq), cfg, SPEC, saved=saved)
    assert adapted.extra_positions == 3
    logits = adapted.network(ms.Tensor(_rows(seq)))[0].asnumpy()
    assert logits.shape == (len(LENGTHS), seq, SPEC.vocab_size)        # real positions only
    for b, n in enumerate(LENGTHS):
        ids = _rows(seq)[b, :n]
        ref = llama_logits(weights, SPEC, np.concatenate([virtual, ids]))[len(virtual):]
        assert rel_err(logits[b, :n], ref) < 1e-5
        assert rel_err(llama_logits(weights, SPEC, ids), ref) > 1e-2
