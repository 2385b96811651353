"""mindtune.cpu_kernels' OpenBLAS products: the op and its gradients on a hand-computed case and against numpy, which
projections `apply_peft` gives it on CPU, the network's loss and gradients against the same network on MindSpore's
MatMul, OpenBLAS's thread count, and the fallback when the wheel is missing or the switch is off."""
import os
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "peft"))
from peft_helpers import (SPEC, adapt, assert_same_loss_and_grads, base_weights,  # noqa: E402
                          layer0_loss_and_grads)

from mindtune import cpu_kernels  # noqa: E402
from mindtune.config.schema import PeftConfig  # noqa: E402

ALL = ["wq", "wk", "wv", "wo", "w1", "w2", "w3"]


@pytest.fixture(scope="module")
def op():
    from mindtune.device import resolve_profile, setup_context

    setup_context(resolve_profile("cpu"))
    assert cpu_kernels.blas_library() is not None, "this machine has g++ and scipy-openblas32: the op must build"
    return cpu_kernels.matmul()


def value_and_grads(fn, a, b, upstream):
    import mindspore as ms

    def loss(x, w):
        return (fn(x, w) * upstream).sum()

    return fn(a, b), ms.grad(loss, grad_position=(0, 1))(a, b)


def test_the_product_and_its_gradients_on_a_hand_computed_case(op):
    """a = [[1, 2], [3, 4]], b = [[1, 0], [0, 1], [1, 1]]: a @ b^T = [[1, 2, 3], [3, 4, 7]]. With the upstream
    gradient d = [[1, 0, 0], [0, 0, 1]]: da = d @ b = [[1, 0], [1, 1]], db = d^T @ a = [[1, 2], [0, 0], [3, 4]]."""
    import mindspore as ms

    a = ms.Tensor(np.array([[1, 2], [3, 4]], np.float32))
    b = ms.Tensor(np.array([[1, 0], [0, 1], [1, 1]], np.float32))
    d = ms.Tensor(np.array([[1, 0, 0], [0, 0, 1]], np.float32))
    y, (da, db) = value_and_grads(op, a, b, d)
    np.testing.assert_array_equal(y.asnumpy(), [[1, 2, 3], [3, 4, 7]])
    np.testing.assert_array_equal(da.asnumpy(), [[1, 0], [1, 1]])
    np.testing.assert_array_equal(db.asnumpy(), [[1, 2], [0, 0], [3, 4]])


def test_leading_axes_are_rows_as_numpy_has_them(op):
    """a [2, 3, 5] @ b [4, 5]^T -> [2, 3, 4]; da [2, 3, 5], db [4, 5] (summed over all 6 rows), as numpy."""
    import mindspore as ms

    rng = np.random.default_rng(0)
    a, b, d = (rng.normal(size=s).astype(np.float32) for s in ((2, 3, 5), (4, 5), (2, 3, 4)))
    y, (da, db) = value_and_grads(op, ms.Tensor(a), ms.Tensor(b), ms.Tensor(d))
    np.testing.assert_allclose(y.asnumpy(), a @ b.T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(da.asnumpy(), d @ b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(db.asnumpy(), d.reshape(6, 4).T @ a.reshape(6, 5), rtol=1e-5, atol=1e-6)


def blas_products_of(network) -> dict:
    op = cpu_kernels.matmul()
    found = {}
    for _, cell in network.cells_and_names():
        for name in ("matmul", "lora_a_matmul", "lora_b_matmul"):
            if getattr(cell, name, None) is op:
                found[name] = found.get(name, 0) + 1
    return found


def test_apply_peft_gives_every_float32_projection_the_op(op):
    """Tiny Llama (2 layers), LoRA on q and v: the 7 projections of each layer and the output head multiply on
    OpenBLAS, q's and v's adapter products too; a second call changes nothing; a float16 projection keeps
    MindSpore's MatMul."""
    import mindspore as ms
    from mindformers.modules.layers import Linear

    lm, adapted = adapt(base_weights(), PeftConfig(method="lora", rank=4, alpha=8, target_modules=["wq", "wv"]))
    assert blas_products_of(adapted.network) == {"matmul": 7 * SPEC.num_layers + 1,
                                                 "lora_a_matmul": 2 * SPEC.num_layers,
                                                 "lora_b_matmul": 2 * SPEC.num_layers}
    assert cpu_kernels.blas_products(adapted.network) == 0
    half = Linear(4, 4, has_bias=False, compute_dtype=ms.float16, param_init_type=ms.float32)
    assert cpu_kernels.blas_products(half) == 0 and type(half.matmul).__name__ == "MatMul"


@pytest.mark.parametrize("cfg, layer0_tensors", [
    (PeftConfig(method="none"), 9),
    (PeftConfig(method="lora", rank=4, alpha=8, target_modules=ALL), 9 + 2 * 7),
], ids=["full", "lora"])
def test_the_network_on_openblas_has_mindspores_values_and_gradients(op, cfg, layer0_tensors):
    """The loss and the gradient of every tensor of layer 0 (LoRA: non-zero A and B) equal those of the same
    network with MindSpore's MatMul put back in every projection."""
    from mindspore import ops

    weights = base_weights()
    results = []
    for on_blas in (True, False):
        lm, adapted = adapt(weights, cfg)    # separate networks: MindSpore keeps a cell's compiled graph
        if not on_blas:
            for _, cell in lm.cells_and_names():
                for name in ("matmul", "lora_a_matmul", "lora_b_matmul"):
                    if getattr(cell, name, None) is op:
                        setattr(cell, name, ops.MatMul(transpose_b=True))
        assert bool(blas_products_of(lm)) == on_blas
        results.append(layer0_loss_and_grads(lm, adapted, cfg))
    assert_same_loss_and_grads(*results, layer0_tensors)


def run(script: str, tmp_path, **environment) -> subprocess.CompletedProcess:
    env = dict(os.environ, MINDTUNE_CACHE_DIR=str(tmp_path), **environment)
    for key in ("MS_WORKER_NUM", "RANK_SIZE", "OPENBLAS_THREAD_TIMEOUT"):
        if key not in environment:
            env.pop(key, None)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)


THREADS = ("import ctypes, os, scipy_openblas32 as s\n"
           "from mindtune import cpu_kernels\n"
           "assert cpu_kernels.blas_library()\n"
           "lib = ctypes.CDLL(os.path.join(s.get_lib_dir(), s.get_library(fullname=True)))\n"
           "print('threads', lib.scipy_openblas_get_num_threads(), 'cores', len(os.sched_getaffinity(0)),"
           " 'timeout', os.environ['OPENBLAS_THREAD_TIMEOUT'])")


@pytest.mark.parametrize("workers", ["", "2"])
def test_openblas_gets_this_processs_share_of_the_cores(tmp_path, workers):
    """MindSpore leaves OMP_NUM_THREADS=1, which OpenBLAS would read: the library sets its threads to the cores
    this process may use, divided among msrun's workers (MS_WORKER_NUM), at least 1; idle threads sleep at once."""
    done = run("import mindspore\n" + THREADS, tmp_path, **({"MS_WORKER_NUM": workers} if workers else {}))
    assert done.returncode == 0, done.stderr[-2000:]
    words = done.stdout.split()
    threads, cores = int(words[words.index("threads") + 1]), int(words[words.index("cores") + 1])
    assert threads == max(1, cores // int(workers or 1))
    assert words[words.index("timeout") + 1] == "4"


@pytest.mark.parametrize("environment, said", [
    ({"MINDTUNE_CPU_BLAS": "0"}, ""),
    ({"MINDTUNE_CPU_KERNELS": "0"}, ""),
    ({"HIDE_OPENBLAS": "1"}, "mindtune: scipy-openblas32 is not installed: the CPU BLAS products are off"),
    ({"CXX": "false"}, "mindtune: building the CPU BLAS products failed ("),
])
def test_without_the_library_projections_keep_mindspores_matmul(tmp_path, environment, said):
    """The switches off, the wheel missing or the build failing: `matmul()` is None, one line says why (nothing
    for a switch), and `blas_products` changes nothing."""
    script = ("import sys, os\n"
              "if os.environ.get('HIDE_OPENBLAS'): sys.modules['scipy_openblas32'] = None\n"
              "from mindtune import cpu_kernels\n"
              "from mindformers.modules.layers import Linear\n"
              "print('op', cpu_kernels.matmul(), 'changed', cpu_kernels.blas_products(Linear(4, 4)))")
    done = run(script, tmp_path, **environment)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "op None changed 0" in done.stdout
    ours = [line for line in done.stderr.splitlines() if line.startswith("mindtune:")]
    if said:
        assert len(ours) == 1 and ours[0].startswith(said), ours
    else:
        assert ours == []
