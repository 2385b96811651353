"""mindtune.cpu_kernels: the fused RMSNorm, SiLU, rotary-embedding and head-transpose kernels on hand-computed
cases and against MindFormers' own cells (values and gradients), what the CPU build swaps, and the fallback when no
library can be built. The whole model with them is checked against the model built without any CPU change by
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


def test_rope_on_a_hand_computed_case(context):
    """Head dim 2, angle with cos 0.6, sin 0.8, x = [1, 2]: y = [x1 c - x2 s, x2 c + x1 s] = [-1, 2]. Upstream
    [1, 0]: dx = [dy1 c + dy2 s, dy2 c - dy1 s] = [0.6, -0.8]."""
    import mindspore as ms

    x = ms.Tensor(np.array([[[[1.0, 2.0]]]], np.float32))
    cos, sin = (ms.Tensor(np.full((1, 1, 2), v, np.float32)) for v in (0.6, 0.8))
    y, (dx, _, _) = weighted_grads(cpu_kernels.rope(), (x, cos, sin), ms.Tensor(np.array([[[[1.0, 0.0]]]], np.float32)))
    np.testing.assert_allclose(y.asnumpy().ravel(), [-1.0, 2.0], rtol=1e-6)
    np.testing.assert_allclose(dx.asnumpy().ravel(), [0.6, -0.8], rtol=1e-6)


def test_head_transpose_swaps_the_middle_axes_and_falls_back_for_other_permutations(context):
    """x [2, 3, 4, 5] numbered 0..119: the kernel's output is x.transpose(0, 2, 1, 3) element for element, and the
    gradient of sum(y * u) is u swapped back (the permutation is its own inverse). Another permutation, or a
    float16 input, runs MindSpore's Transpose."""
    import mindspore as ms
    from mindspore import ops

    x_np = np.arange(120, dtype=np.float32).reshape(2, 3, 4, 5)
    upstream = np.random.RandomState(5).randn(2, 4, 3, 5).astype(np.float32)
    swap = cpu_kernels.FusedHeadTranspose(ops.Transpose())

    class Weighted(ms.nn.Cell):
        def __init__(self):
            super().__init__()
            self.swap = swap

        def construct(self, x):
            return (self.swap(x, (0, 2, 1, 3)) * ms.Tensor(upstream)).sum()

    y = swap(ms.Tensor(x_np), (0, 2, 1, 3)).asnumpy()
    np.testing.assert_array_equal(y, x_np.transpose(0, 2, 1, 3))
    assert y[1, 2, 0, 3] == x_np[1, 0, 2, 3] == 73.0     # 1 * 60 + 0 * 20 + 2 * 5 + 3
    dx = ms.grad(Weighted())(ms.Tensor(x_np)).asnumpy()
    np.testing.assert_array_equal(dx, upstream.transpose(0, 2, 1, 3))
    other = swap(ms.Tensor(x_np), (0, 1, 3, 2)).asnumpy()
    np.testing.assert_array_equal(other, x_np.transpose(0, 1, 3, 2))
    half = swap(ms.Tensor(x_np.astype(np.float16)), (0, 2, 1, 3))
    assert half.dtype == ms.float16
    np.testing.assert_array_equal(half.asnumpy(), x_np.astype(np.float16).transpose(0, 2, 1, 3))


@pytest.mark.parametrize("per_row", [False, True])
def test_fused_rope_cell_equals_mindformers_own(context, per_row):
    """A RotaryEmbedding swapped by `fuse` against an untouched one (rope-slice path): rotated queries and keys and
    their gradients, with tables [T, D] shared by the batch or [B, 1, T, D] per row (packing's positions)."""
    import mindspore as ms
    from mindformers.modules.layers import RotaryEmbedding

    b, t, d = 2, 6, 16
    rng = np.random.RandomState(3)

    class Attention(ms.nn.Cell):      # a rotary embedding is wrapped where its parent holds it
        def __init__(self):
            super().__init__()
            self.apply_rotary_emb = RotaryEmbedding(d, ms.float32, use_rope_slice=True)

    parent = Attention()
    assert cpu_kernels.fuse(parent) == 1 and cpu_kernels.fuse(parent) == 0
    fused, plain = parent.apply_rotary_emb, RotaryEmbedding(d, ms.float32, use_rope_slice=True)
    assert isinstance(fused, cpu_kernels.FusedRotary)
    angles = rng.rand(b if per_row else 1, t, d // 2) * 6
    angles = np.concatenate([angles, angles], -1)
    cos, sin = (ms.Tensor((f(angles)[:, None] if per_row else f(angles)[0]).astype(np.float32))
                for f in (np.cos, np.sin))
    tables = (cos, sin, ms.Tensor(np.eye(d, dtype=np.float32)))
    q, k = (ms.Tensor(rng.randn(b, heads, t, d).astype(np.float32)) for heads in (4, 2))
    wq, wk = (ms.Tensor(rng.randn(b, heads, t, d).astype(np.float32)) for heads in (4, 2))

    class Weighted(ms.nn.Cell):
        def __init__(self, rotary):
            super().__init__()
            self.rotary = rotary
            self.cos, self.sin, self.swap = tables
            self.wq, self.wk = wq, wk

        def construct(self, q, k):
            rq, rk = self.rotary(q, k, (self.cos, self.sin, self.swap))
            return (rq * self.wq).sum() + (rk * self.wk).sum()

    (fq, fk), (pq, pk) = (cell(q, k, tables) for cell in (fused, plain))
    np.testing.assert_allclose(fq.asnumpy(), pq.asnumpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fk.asnumpy(), pk.asnumpy(), rtol=1e-5, atol=1e-6)
    (gq, gk), (want_q, want_k) = (ms.grad(Weighted(cell), grad_position=(0, 1))(q, k) for cell in (fused, plain))
    assert np.abs(want_q.asnumpy()).max() > 0.1
    np.testing.assert_allclose(gq.asnumpy(), want_q.asnumpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gk.asnumpy(), want_k.asnumpy(), rtol=1e-5, atol=1e-6)


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
        (norm(x).asnumpy(), *ms.grad(Weighted(norm), grad_position=0, weights=norm.weight)(x))
        for norm in (fused, plain))
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
    """The tiny model (2 layers) as built for CPU: 5 RMSNorms (2 a layer and the final one), 2 SiLUs and 2 rotary
    embeddings swapped, and both head transposes of each attention wrapped."""
    from mindtune.models.build import build_llama
    from mindtune.models.spec import get_preset

    llama = build_llama(get_preset("tiny"), context, seq_length=8)
    kinds = {}
    for _, cell in llama.cells_and_names():
        name = type(cell).__name__
        if any(getattr(cell, kernel, None) is not None for kernel in ("fused_rms_norm", "fused_silu", "fused_rope")):
            kinds[name] = kinds.get(name, 0) + 1
    assert kinds == {"LlamaRMSNorm": 5, "LlamaSiLU": 2, "FusedRotary": 2}
    wrapped = [name for name, cell in llama.cells_and_names() if isinstance(cell, cpu_kernels.FusedHeadTranspose)]
    assert sorted(wrapped) == [f"model.layers.{i}.attention.{name}" for i in (0, 1)
                               for name in ("merger_head_transpose", "transpose")]


@pytest.mark.parametrize("environment, said", [
    ({"MINDTUNE_CPU_KERNELS": "0"}, ""),
    ({"CXX": "/nonexistent/g++"},
     "mindtune: no C++ compiler (/nonexistent/g++) on PATH: the CPU fused kernels are off"),
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
