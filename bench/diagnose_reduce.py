"""Last-axis reductions of a Llama step: the tensor as it is (3-D / 4-D) vs its 2-D [rows, last] view.

MindSpore 2.9's CPU ReduceSum/ReduceMean runs the same last-axis reduction several times slower on a 3-D or 4-D
tensor than on its 2-D view; `mindtune/shims.py: cpu_explicit_broadcasts` therefore takes RMSNorm's mean, the
gradient of its [B,T,1] scaling and the attention backward's row sum on 2-D views (the softmax gradient's column
over the scores when this was written; since 2026-12-02 night rowsum(dO * O) over the 64-wide output, see
mindtune/shims.py: AttentionCore). This times each reduction both ways
at SmolLM2-135M's training shapes (batch 4 x 256: scores [4, 9, 256, 256], hidden [4, 256, 576]), one compiled graph
per variant, best of three rounds, and checks the values agree.

    flock /tmp/mindtune-bench.lock .venv/bin/python bench/diagnose_reduce.py
"""
import argparse
import time

import numpy as np

from mindtune import shims

shims.quiet_environment()
import mindspore as ms  # noqa: E402
from mindspore import ops  # noqa: E402

SUM_KEEP = ops.ReduceSum(keep_dims=True)
MEAN_KEEP = ops.ReduceMean(keep_dims=True)


def as_is(reduce):
    return lambda x: reduce(x, -1)


def on_rows(reduce):
    return lambda x: reduce(x.reshape(-1, x.shape[-1]), -1).reshape(x.shape[:-1] + (1,))


def best_ms(fn, x, calls: int, rounds: int = 3) -> float:
    graph = ms.jit(fn)
    graph(x).asnumpy()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            graph(x).asnumpy()
        times.append((time.perf_counter() - start) / calls * 1e3)
    return min(times)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=30)
    args = p.parse_args()
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    rng = np.random.default_rng(0)
    scores = ms.Tensor(rng.standard_normal((4, 9, 256, 256)).astype(np.float32))
    hidden = ms.Tensor(rng.standard_normal((4, 256, 576)).astype(np.float32))
    cases = [("softmax-gradient column: sum of [4,9,256,256]", SUM_KEEP, scores),
             ("RMSNorm mean of squares: mean of [4,256,576]", MEAN_KEEP, hidden),
             ("RMSNorm scaling gradient: sum of [4,256,576]", SUM_KEEP, hidden)]
    print(f"{'last-axis reduction':48s} {'as is ms':>9s} {'2-D ms':>8s} {'ratio':>6s}  max |diff|")
    for name, reduce, x in cases:
        slow, fast = best_ms(as_is(reduce), x, args.calls), best_ms(on_rows(reduce), x, args.calls)
        diff = np.abs(ms.jit(as_is(reduce))(x).asnumpy() - ms.jit(on_rows(reduce))(x).asnumpy()).max()
        print(f"{name:48s} {slow:9.2f} {fast:8.2f} {slow / fast:5.1f}x  {diff:.1e}")


if __name__ == "__main__":
    main()
