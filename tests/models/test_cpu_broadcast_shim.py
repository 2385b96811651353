"""mindtune.shims.cpu_explicit_broadcasts: on CPU every broadcasting primitive it names is swapped (the values are
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


def test_every_named_broadcasting_primitive_is_swapped_on_cpu(llama):
    from mindspore.ops.primitive import Primitive

    from mindtune.shims import cpu_explicit_broadcasts

    seen = {}
    softmaxes = []
    for _, cell in llama.cells_and_names():
        if type(cell).__name__ == "LLamaAttention":
            softmaxes.append(type(cell.softmax).__name__)
        for name in _BROADCASTING.get(type(cell).__name__, ()):
            if hasattr(cell, name):
                seen[type(cell).__name__] = seen.get(type(cell).__name__, 0) + 1
                assert not isinstance(getattr(cell, name), Primitive), f"{type(cell).__name__}.{name}"
    # 2 layers: the attention mask add; 5 RMSNorms (2 per layer and the final one) x 2; 2 rotary embeddings x 3
    assert seen == {"LLamaAttention": 2, "LlamaRMSNorm": 10, "RotaryEmbedding": 6}
    assert softmaxes == ["SoftmaxBroadcastGrad"] * 2
    assert cpu_explicit_broadcasts(llama) == 0          # already swapped: nothing left to do


def test_the_attention_softmax_swap_keeps_values_and_gradients_bit_identical(llama):
    import mindspore as ms
    import numpy as np
    from mindspore import nn, ops

    swapped = next(cell.softmax for _, cell in llama.cells_and_names() if type(cell).__name__ == "LLamaAttention")

    class Weighted(nn.Cell):
        def __init__(self, softmax):
            super().__init__()
            self.softmax = softmax

        def construct(self, x, w):
            return (self.softmax(x) * w).sum()

    rng = np.random.RandomState(0)
    x = ms.Tensor(rng.randn(2, 3, 16, 16).astype(np.float32) * 3)
    w = ms.Tensor(rng.randn(2, 3, 16, 16).astype(np.float32))
    want = ms.grad(Weighted(ops.Softmax()))(x, w).asnumpy()
    got = ms.grad(Weighted(swapped))(x, w).asnumpy()
    assert np.abs(want).max() > 0.1
    assert np.array_equal(got, want), np.abs(got - want).max()
    assert np.array_equal(swapped(x).asnumpy(), ops.Softmax()(x).asnumpy())
