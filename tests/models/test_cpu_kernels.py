"""mindtune.cpu_kernels: the fused RMSNorm and SiLU kernels on hand-computed cases and against MindFormers' own
cells (values and gradients), what the CPU build swaps, and the fallback when no library can be built. The whole
model with them is checked against the model built without any CPU change by
test_cpu_broadcast_shim.test_the_shimmed_model_has_the_unshimmed_models_loss_and_gradients."""
import math
import subprocess
import sys

import numpy as np
import pytest

from mindtune import cpu_kernels


@pytest.fixture(scope="module")
def context():
    from mindtune.device import resolve_profile, setup_context

    profile = resolve_profile("cpu")
    setup_context(profile)
    assert cpu_kernels.library() is not None, "this machine has g++: the kernels must build"
    return profile


def weighted_grads(fn, inputs, upstream):
    """(fn(*inputs), the gradients of sum(fn(*inputs) * upstream) in every input)."""
    import mindspore as ms

    def loss(*args):
        return (fn(*args) * upstream).sum()

    grads = ms.grad(loss, grad_position=tuple(range(len(inputs))))(*inputs)
    return fn(*inputs), grads if isinstance(grads, tuple) else (grads,)


def test_rms_norm_on_a_hand_computed_case(context):
    """x = [3, 4], w = [1, 2], eps 0: rms = sqrt(12.5), s = 1 / rms = 0.28284; y = x * w * s = [0.84853, 2.26274].
    Upstream [1, 0]: dx = s * dy * w - s^3 / 2 * x * sum(dy * w * x) = [0.28284 - 0.011314 * 3 * 3, -0.011314 * 4 * 3]
    = [0.18102, -0.13576]; dw = dy * x * s = [0.84853, 0]."""
    import mindspore as ms

    x, w, eps = (ms.Tensor(np.array(v, np.float32)) for v in ([[3.0, 4.0]], [1.0, 2.0], [0.0]))
    y, (dx, dw, _) = weighted_grads(cpu_kernels.rms_norm(), (x, w, eps), ms.Tensor(np.array([[1.0, 0.0]], np.float32)))
    np.testing.assert_allclose(y.asnumpy(), [[0.848528, 2.262742]], rtol=1e-6)
    np.testing.assert_allclose(dx.asnumpy(), [[0.181019, -0.135765]], rtol=1e-5)
    np.testing.assert_allclose(dw.asnumpy(), [0.848528, 0.0], atol=1e-6)


def test_silu_on_a_hand_computed_case(context):
    """silu(0) = 0 with slope 1/2; at x = ln 3, sigmoid = 3/4: silu = 0.75 ln 3 = 0.82396 and its slope
    s (1 + x (1 - s)) = 0.75 (1 + ln 3 / 4) = 0.95599."""
    import mindspore as ms

    x = ms.Tensor(np.array([0.0, math.log(3)], np.float32))
    y, (dx,) = weighted_grads(cpu_kernels.silu(), (x,), ms.Tensor(np.ones(2, np.float32)))
    np.testing.assert_allclose(y.asnumpy(), [0.0, 0.823959], atol=1e-6)
    np.testing.assert_allclose(dx.asnumpy(), [0.5, 0.955990], rtol=1e-6)


@pytest.mark.parametrize("shape", [(2, 5, 64), (3, 7, 576)])
def test_fused_rms_norm_cell_equals_mindformers_own(context, shape):
    """A LlamaRMSNorm swapped by `fuse` against an untouched one (MindFormers' own ops) with the same random
    weight: output, input gradient and weight gradient; a float16 input keeps MindFormers' path."""
    import mindspore as ms
    from mindformers.models.llama.llama_layer import LlamaRMSNorm

    rng = np.random.RandomState(1)
    width = shape[-1]
    fused, plain = LlamaRMSNorm(width, 1e-5, fused_kernel=False), LlamaRMSNorm(width, 1e-5, fused_kernel=False)
    assert cpu_kernels.fuse(fused) == 1 and cpu_kernels.fuse(fused) == 0
    weight = ms.Tensor(rng.randn(width).astype(np.float32))
    for norm in (fused, plain):
        norm.weight.set_data(weight)
    x = ms.Tensor(rng.randn(*shape).astype(np.float32) * 2)
    upstream = ms.Tensor(rng.randn(*shape).astype(np.float32))

    class Weighted(ms.nn.Cell):
        def __init__(self, norm):
            super().__init__()
            self.norm = norm

        def construct(self, x):
            return (self.norm(x) * upstream).sum()

    (y, dx, dw), (want_y, want_dx, want_dw) = (
        (norm(x).asnumpy(), *ms.grad(Weighted(norm), grad_position=0, weights=norm.weight)(x)) for norm in (fused, plain))
    assert np.abs(want_dx.asnumpy()).max() > 0.1 and np.abs(want_dw.asnumpy()).max() > 0.1
    np.testing.assert_allclose(y, want_y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dx.asnumpy(), want_dx.asnumpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dw.asnumpy(), want_dw.asnumpy(), rtol=1e-4, atol=1e-4)
    half = ms.Tensor(rng.randn(*shape).astype(np.float16))
    np.testing.assert_array_equal(fused(half).asnumpy(), plain(half).asnumpy())


def test_fused_silu_cell_equals_mindformers_own(context):
    import mindspore as ms
    from mindformers.models.llama.llama_layer import LlamaSiLU

    fused, plain = LlamaSiLU(), LlamaSiLU()
    assert cpu_kernels.fuse(fused) == 1 and cpu_kernels.fuse(fused) == 0
    rng = np.random.RandomState(2)
    x = ms.Tensor((rng.randn(6, 1536) * 4).astype(np.float32))
    upstream = ms.Tensor(rng.randn(6, 1536).astype(np.float32))
    (y, (dx,)), (want_y, (want_dx,)) = (weighted_grads(cell, (x,), upstream) for cell in (fused, plain))
    np.testing.assert_allclose(y.asnumpy(), want_y.asnumpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dx.asnumpy(), want_dx.asnumpy(), rtol=1e-5, atol=1e-6)


def test_the_cpu_build_runs_every_norm_and_silu_on_the_kernels(context):
    """The tiny model (2 layers) as built for CPU: 5 RMSNorms (2 a layer and the final one) and 2 SiLUs swapped."""
    from mindtune.models.build import build_llama
    from mindtune.models.spec import get_preset

    llama = build_llama(get_preset("tiny"), context, seq_length=8)
    kinds = {}
    for _, cell in llama.cells_and_names():
        name = type(cell).__name__
        if name in ("LlamaRMSNorm", "LlamaSiLU") and (getattr(cell, "fused_rms_norm", None) is not None
                                                      or getattr(cell, "fused_silu", None) is not None):
            kinds[name] = kinds.get(name, 0) + 1
    assert kinds == {"LlamaRMSNorm": 5, "LlamaSiLU": 2}


@pytest.mark.parametrize("environment, said", [
    ({"MINDTUNE_CPU_KERNELS": "0"}, ""),
    ({"CXX": "/nonexistent/g++"}, "mindtune: no C++ compiler (/nonexistent/g++) on PATH: the CPU fused kernels are off"),
    ({"CXX": "false"}, "mindtune: building the CPU fused kernels failed ("),
])
def test_without_a_library_the_model_keeps_mindspores_kernels(tmp_path, environment, said):
    """No compiler, a failing one, or the switch off: `library()` is None, one line says why (nothing for the
    switch), and `fuse` changes nothing. A fresh process and cache directory, so nothing is reused."""
    import os

    script = ("from mindtune import cpu_kernels\n"
              "from mindformers.models.llama.llama_layer import LlamaRMSNorm\n"
              "print('library', cpu_kernels.library(), 'fused', cpu_kernels.fuse(LlamaRMSNorm(8, fused_kernel=False)))")
    env = dict(os.environ, MINDTUNE_CACHE_DIR=str(tmp_path), **environment)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "library None fused 0" in done.stdout
    ours = [line for line in done.stderr.splitlines() if line.startswith("mindtune:")]
    if said:
        assert len(ours) == 1 and ours[0].startswith(said), ours
    else:
        assert ours == []
    assert not (tmp_path / "kernels").exists() or not any(p.suffix == ".so" for p in (tmp_path / "kernels").iterdir())
