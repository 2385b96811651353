"""mindtune's training network (MindFormers Llama) against the independent numpy Llama, on tiny random weights."""
from dataclasses import replace

import numpy as np
import pytest

from reference.numpy_llama import llama_logits
from reference.tiny import lively_weights

from mindtune.models.spec import PRESETS

SEQ = 16


def _causal_lm(spec, weights):
    from mindtune.device import resolve_profile, setup_context
    from mindtune.models.build import build_llama, load_weights
    from mindtune.models.causal_lm import CausalLM

    profile = resolve_profile("cpu")
    setup_context(profile, graph_mode=True, seed=0)
    # as the loaders build it: MindFormers' random initialisation skipped, every value set by load_weights
    llama = build_llama(spec, profile, seq_length=SEQ, batch_size=1, initialise=False)
    assert all(p.has_init for p in llama.get_parameters())
    load_weights(llama, weights)
    assert not any(p.has_init for p in llama.get_parameters())
    return CausalLM(llama)


def rel_err(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("variant", ["tied_gqa", "untied_bias"])
def test_logits_match_numpy_reference(variant):
    import mindspore as ms

    spec = PRESETS["tiny"]
    if variant == "untied_bias":
        spec = replace(spec, tie_word_embeddings=False, qkv_bias=True, num_kv_heads=4, rope_theta=5e4)
    weights = lively_weights(spec, seed=3)
    net = _causal_lm(spec, weights)
    ids = np.random.default_rng(0).integers(3, spec.vocab_size, SEQ)   # no pad id (0) inside the text
    logits, _ = net(ms.Tensor(ids[None].astype(np.int32)))
    ref = llama_logits(weights, spec, ids)
    assert rel_err(logits.asnumpy()[0], ref) < 1e-5
    # the check can fail: a perturbed weight moves the logits well past the tolerance
    bad = dict(weights)
    bad["model.layers.1.attention.wk.weight"] = weights["model.layers.1.attention.wk.weight"] * 1.01
    assert rel_err(llama_logits(bad, spec, ids), ref) > 1e-4
