"""Matrix products at SmolLM2's training shapes: alone, and forward vs backward inside a training graph.

    python bench/diagnose_matmul.py [--ref-python /tmp/ref-venv/bin/python]

Part 1: one float32 product per call (best of 7) for each of the model's weight shapes with 1024 tokens, in the
three transpose layouts a training step uses (forward x @ W^T, input gradient dy @ W, weight gradient dy^T @ x).
Part 2: six chained 1024 x 576 -> 1536 products (the output sliced back to 576 columns between them), timed
forward only and forward + backward, so the backward products' cost is the difference; in MindSpore with the
frozen weight Parameter fed to the product, with a copy of it made in the graph, and with the gradient call
compiled as a Cell that owns the parameters (mindtune.engine.graph.CompiledFunction, as the training engine does). The same two parts run
in PyTorch in the reference venv when it exists. Prints one line per measurement.
"""
import argparse
import os
import subprocess
import sys
import time

TOKENS = 1024
SHAPES = [(576, 1536), (1536, 576), (576, 576), (576, 192), (576, 49152)]   # (in, out) of x @ W^T
CHAIN = 6


def best_of(fn, repeats=7):
    fn()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return min(times)


def mindspore_side():
    import numpy as np
    import mindspore as ms
    from mindspore import nn, ops

    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    rng = np.random.default_rng(0)

    class Product(nn.Cell):
        def __init__(self, transpose_a, transpose_b):
            super().__init__()
            self.matmul = ops.MatMul(transpose_a=transpose_a, transpose_b=transpose_b)

        def construct(self, a, b):
            return self.matmul(a, b)

    for k, n in SHAPES:
        rates = []
        for name, ta, tb, a_shape, b_shape in (("x@W^T", False, True, (TOKENS, k), (n, k)),
                                               ("dy@W", False, False, (TOKENS, n), (n, k)),
                                               ("dy^T@x", True, False, (TOKENS, n), (TOKENS, k))):
            a = ms.Tensor(rng.standard_normal(a_shape, dtype=np.float32))
            b = ms.Tensor(rng.standard_normal(b_shape, dtype=np.float32))
            net = Product(ta, tb)
            seconds = best_of(lambda: net(a, b).asnumpy())
            rates.append(f"{name} {2 * TOKENS * k * n / seconds / 1e9:6.1f}")
        print(f"mindspore product {TOKENS}x{k}->{n} GFLOP/s: " + ", ".join(rates), flush=True)

    k, n = SHAPES[0]

    class Chain(nn.Cell):
        def __init__(self, copy_weight):
            super().__init__()
            self.copy_weight = copy_weight
            self.matmul = ops.MatMul(transpose_b=True)
            self.weight = ms.Parameter(ms.Tensor(rng.standard_normal((n, k), dtype=np.float32) * 0.03),
                                       requires_grad=False)
            self.scale = ms.Parameter(ms.Tensor(np.ones((1,), np.float32)))

        def construct(self, x):
            h = x * self.scale
            weight = ops.cast(self.weight, ms.float32) * 1.0 if self.copy_weight else self.weight
            for _ in range(CHAIN):
                h = self.matmul(h, weight)[:, :k]
            return h.sum()

    from mindtune.engine.graph import CompiledFunction

    x = ms.Tensor(rng.standard_normal((TOKENS, k), dtype=np.float32))
    for copy_weight, owned in ((False, False), (True, False), (False, True)):
        chain = Chain(copy_weight)
        grad = ms.value_and_grad(chain, None, [chain.scale])
        if owned:      # the training engine's way: the gradient call compiled as a Cell that owns the parameters
            grad = CompiledFunction(grad, [chain])
        forward = best_of(lambda: float(chain(x)))
        both = best_of(lambda: float(grad(x)[0]))
        weight = "a copy made in the graph" if copy_weight else "the Parameter"
        how = "compiled as a Cell owning the parameters" if owned else "value_and_grad called directly"
        print(f"mindspore chain of {CHAIN}, weight {weight}, {how}: forward {forward * 1e3:.1f} ms, "
              f"backward {(both - forward) * 1e3:.1f} ms", flush=True)


def torch_side(threads):
    import torch

    torch.set_num_threads(threads)   # a MindSpore parent leaves OMP_NUM_THREADS=1 in its children's environment
    torch.manual_seed(0)
    for k, n in SHAPES:
        x, w, dy = torch.randn(TOKENS, k), torch.randn(n, k), torch.randn(TOKENS, n)
        rates = []
        for name, fn in (("x@W^T", lambda: x @ w.t()), ("dy@W", lambda: dy @ w), ("dy^T@x", lambda: dy.t() @ x)):
            rates.append(f"{name} {2 * TOKENS * k * n / best_of(fn) / 1e9:6.1f}")
        print(f"pytorch   product {TOKENS}x{k}->{n} GFLOP/s: " + ", ".join(rates), flush=True)
    k, n = SHAPES[0]
    weight, scale, x = torch.randn(n, k) * 0.03, torch.ones(1, requires_grad=True), torch.randn(TOKENS, k)

    def chain():
        h = x * scale
        for _ in range(CHAIN):
            h = (h @ weight.t())[:, :k]
        return h.sum()

    with torch.no_grad():
        forward = best_of(lambda: chain().item())
    both = best_of(lambda: chain().backward())
    print(f"pytorch   chain of {CHAIN}: forward {forward * 1e3:.1f} ms, backward {(both - forward) * 1e3:.1f} ms",
          flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ref-python", default=os.environ.get("REF_PYTHON", "/tmp/ref-venv/bin/python"))
    p.add_argument("--threads", type=int, default=2, help="PyTorch's threads (the machine's cores)")
    p.add_argument("--runtime", choices=["default", "no_pipeline", "launch_blocking"], default="default",
                   help="MindSpore runtime setting for the MindSpore side (to look for the backward penalty's cause)")
    p.add_argument("--no-ref", action="store_true", help="MindSpore side only")
    p.add_argument("--side", choices=["torch"], help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.side == "torch":
        torch_side(a.threads)
        return 0
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from mindtune import shims
    shims.quiet_environment()
    if a.runtime == "no_pipeline":       # the runtime's asynchronous infer/resize/launch actors off
        os.environ["MS_DEV_RUNTIME_CONF"] = "pipeline:False"
    if a.runtime == "launch_blocking":
        import mindspore as ms
        ms.runtime.launch_blocking()
    print(f"mindspore runtime: {a.runtime}")
    mindspore_side()
    if a.no_ref:
        return 0
    if not os.path.exists(a.ref_python):
        print(f"no reference venv at {a.ref_python}: see bench/README.md to set it up")
        return 0
    subprocess.run([a.ref_python, __file__, "--side", "torch", "--threads", str(a.threads)], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
