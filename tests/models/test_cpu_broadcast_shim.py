"""mindtune.shims.cpu_explicit_broadcasts: on CPU every broadcasting primitive it names is swapped, RMSNorm's mean
is taken on a 2-D view, and values and gradients stay those of the unshimmed cells (the whole model's values are also
checked against numpy by test_llama_parity, which runs on the shimmed model)."""
import pytest

from mindtune.shims import _BROADCASTING


@pytest.fixture(scope="module")
def llama():
    """The tiny model as built for the CPU profile (build_llama applies the shim)."""
    from mindtune.device import resolve_profile, setup_context
    from mindtune.models.build import build_llama
    from mindtune.models.spec import get_preset

    profile = resolve_profile("cpu")
    setup_context(profile)
    return build_llama(get_preset("tiny"), profile, seq_length=16)


@pytest.fixture(scope="module")
def weighted():
    """weighted(cell)(x, w) = (cell(x) * w).sum(): its gradient in x is the cell's backward applied to w."""
    from mindspore import nn

    class Weighted(nn.Cell):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def construct(self, x, w):
            return (self.inner(x) * w).sum()

    return Weighted


def test_every_named_broadcasting_primitive_is_swapped_on_cpu(llama):
    from mindspore.ops.primitive import Primitive

    from mindtune.shims import cpu_explicit_broadcasts

    seen = {}
    means, grouped = [], []
    for _, cell in llama.cells_and_names():
        if type(cell).__name__ == "LLamaAttention":
            grouped.append(sorted(k for k in vars(cell) if k in ("_attn", "_repeat_kv")))
        if type(cell).__name__ == "LlamaRMSNorm":
            means.append(type(cell.mean).__name__)
        for name in _BROADCASTING.get(type(cell).__name__, ()):
            if hasattr(cell, name):
                seen[type(cell).__name__] = seen.get(type(cell).__name__, 0) + 1
                assert not isinstance(getattr(cell, name), Primitive), f"{type(cell).__name__}.{name}"
    # 2 layers: 5 RMSNorms (2 per layer and the final one) x 2; 2 rotary embeddings x 3
    assert seen == {"LlamaRMSNorm": 10, "RotaryEmbedding": 6}
    assert means == ["RowMean"] * 5
    assert grouped == [["_attn", "_repeat_kv"]] * 2    # the tiny preset has 2 kv heads for 4 heads
    assert cpu_explicit_broadcasts(llama) == 0          # already swapped: nothing left to do


@pytest.mark.parametrize("heads, kv_heads, prefix", [(6, 2, 0), (4, 4, 0), (6, 3, 5)])
def test_the_attention_core_keeps_values_and_gradients(llama, heads, kv_heads, prefix):
    """The shim's attention (scaled queries, grouped heads, the written-out backward) against MindFormers' formula
    softmax(q k^T / sqrt(d) + mask) v with every kv head repeated, on a causal mask with `prefix` extra keys
    (prefix tuning's shape): the output and the gradients in q, k and v."""
    import mindspore as ms
    import numpy as np
    from mindspore import nn, ops

    attention = next(cell for _, cell in llama.cells_and_names() if type(cell).__name__ == "LLamaAttention")
    core = attention.attention_core
    b, t, d = 2, 8, 16
    rep, keys = heads // kv_heads, t + prefix
    rng = np.random.RandomState(2)
    q = ms.Tensor(rng.randn(b, heads, t, d).astype(np.float32))
    k, v = (ms.Tensor(rng.randn(b, kv_heads, keys, d).astype(np.float32)) for _ in range(2))
    mask = np.triu(np.full((t, keys), -10000.0, np.float32), prefix + 1)[None, None].repeat(b, 0)
    mask[1, 0, :, :prefix + 2] = -10000.0          # a row's own mask, as packing gives
    mask[1, 0, :, prefix + 2] = 0.0
    mask = ms.Tensor(mask)
    w = ms.Tensor(rng.randn(b, heads, t, d).astype(np.float32))
    scale = d ** -0.5

    class Shimmed(nn.Cell):
        def construct(self, q, k, v):
            grouped = (q * scale).reshape(b, kv_heads, rep * t, d)
            out, _ = core(grouped, k, v, ops.broadcast_to(mask, (b, heads, t, keys)))
            return (out.reshape(b, heads, t, d) * w).sum()

    class Formula(nn.Cell):
        def construct(self, q, k, v):
            k_rep, v_rep = (ops.repeat_interleave(x, rep, 1) for x in (k, v))
            probs = ops.softmax(ops.matmul(q, k_rep.swapaxes(-1, -2)) * scale + mask, -1)
            return (ops.matmul(probs, v_rep) * w).sum()

    (got, got_grads), (want, want_grads) = (ms.value_and_grad(cell(), grad_position=(0, 1, 2))(q, k, v)
                                            for cell in (Shimmed, Formula))
    np.testing.assert_allclose(float(got.asnumpy()), float(want.asnumpy()), rtol=1e-5)
    for name, g, h in zip("qkv", got_grads, want_grads):
        assert np.abs(h.asnumpy()).max() > 0.1, name
        np.testing.assert_allclose(g.asnumpy(), h.asnumpy(), rtol=1e-5, atol=1e-5, err_msg=name)


def test_the_rmsnorm_swaps_keep_values_and_gradients(llama, weighted):
    """The shimmed RMSNorm (2-D-view mean, 2-D-view scalings) against a fresh unshimmed one with the same weight:
    output, input gradient and weight gradient."""
    import mindspore as ms
    import numpy as np
    from mindformers.models.llama.llama_layer import LlamaRMSNorm

    shimmed = next(cell for _, cell in llama.cells_and_names() if type(cell).__name__ == "LlamaRMSNorm")
    width = shimmed.weight.shape[0]
    plain = LlamaRMSNorm(width, shimmed.eps, fused_kernel=False)
    rng = np.random.RandomState(1)
    weight = rng.randn(width).astype(np.float32)
    plain.weight.set_data(ms.Tensor(weight))
    x = ms.Tensor(rng.randn(2, 5, width).astype(np.float32) * 2)
    w = ms.Tensor(rng.randn(2, 5, width).astype(np.float32))
    saved = shimmed.weight.asnumpy().copy()
    shimmed.weight.set_data(ms.Tensor(weight))
    try:
        for norm in (shimmed, plain):
            assert norm.self_define
        want = plain(x).asnumpy()
        got = shimmed(x).asnumpy()
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
        grads = [ms.grad(weighted(norm), grad_position=0, weights=norm.weight)(x, w) for norm in (shimmed, plain)]
        (got_dx, got_dw), (want_dx, want_dw) = grads
        assert np.abs(want_dx.asnumpy()).max() > 0.1
        np.testing.assert_allclose(got_dx.asnumpy(), want_dx.asnumpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got_dw.asnumpy(), want_dw.asnumpy(), rtol=1e-5, atol=1e-6)
    finally:
        shimmed.weight.set_data(ms.Tensor(saved))


def test_the_shimmed_model_has_the_unshimmed_models_loss_and_gradients():
    """The whole CPU build (the shim's explicit broadcasts, 2-D views and attention core, and the fused kernels of
    mindtune.cpu_kernels) against MindFormers' Llama as built without them, same weights: the loss and the gradient of every weight of layer 0."""
    import mindspore as ms
    import numpy as np
    from mindformers.models.llama import LlamaForCausalLM
    from reference.tiny import lively_weights

    from mindtune.device import resolve_profile
    from mindtune.engine.buckets import gather_labels
    from mindtune.engine.losses import CausalLMLoss
    from mindtune.models.build import build_llama, llama_config, load_weights
    from mindtune.models.causal_lm import CausalLM
    from mindtune.models.spec import get_preset

    spec, profile = get_preset("tiny"), resolve_profile("cpu")
    weights = lively_weights(spec, seed=4)
    rng = np.random.default_rng(4)
    ids = rng.integers(1, spec.vocab_size, (2, 16)).astype(np.int32)
    labels = np.where(rng.random((2, 16)) < 0.7, rng.integers(1, spec.vocab_size, (2, 16)), -100).astype(np.int32)
    results = []
    for llama in (build_llama(spec, profile, seq_length=16),
                  LlamaForCausalLM(llama_config(spec, profile, seq_length=16))):
        load_weights(llama, weights)
        loss_cell = CausalLMLoss(CausalLM(llama))
        params = [p for p in loss_cell.get_parameters() if ".layers.0." in p.name]

        def loss(*batch):
            return loss_cell(*batch)[0]

        value, grads = ms.value_and_grad(loss, None, params)(*(ms.Tensor(x) for x in gather_labels((ids, labels))))
        results.append((float(value.asnumpy()), {p.name: g.asnumpy() for p, g in zip(params, grads)}))
    (shimmed_loss, shimmed), (plain_loss, plain) = results
    assert len(plain) >= 9 and abs(shimmed_loss - plain_loss) < 1e-5
    for name, want in plain.items():
        assert np.abs(want).max() > 1e-4, name
        np.testing.assert_allclose(shimmed[name], want, rtol=1e-4, atol=1e-6, err_msg=name)
