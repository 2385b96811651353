"""What a LoRA branch costs in a compiled training step: a chain of LAYERS frozen [H, H] projections, each with
no adapter or with MindPet's LoRADense (rank 8) computing in float32 (as MindFormers' LoraAdapter builds it for a
float32 model) or in float16 (LoRADense's own default); forward + backward (gradients of the input and of every
adapter matrix), one process, the variants alternating.

    python bench/diagnose_lora.py [--rows 512] [--hidden 576] [--layers 30] [--rounds 6]

Prints the median time of each variant and what one LoRA branch adds.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=512)
    p.add_argument("--hidden", type=int, default=576)
    p.add_argument("--layers", type=int, default=30)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--only", help="variant names separated by ; (default: all)")
    a = p.parse_args()

    from mindtune import shims
    shims.quiet_environment()
    import mindspore as ms
    from mindpet.delta.lora import LoRADense
    from mindspore import Parameter, Tensor, nn, ops

    from mindtune.engine.graph import CompiledFunction

    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    rng = np.random.default_rng(0)

    class Frozen(nn.Cell):
        def __init__(self):
            super().__init__()
            self.weight = Parameter(Tensor(rng.standard_normal((a.hidden, a.hidden)).astype(np.float32) * 0.02),
                                    requires_grad=False)
            self.matmul = ops.MatMul(transpose_b=True)

        def construct(self, x):
            return self.matmul(x, self.weight)

    def lora(dtype):
        def make():
            cell = LoRADense(a.hidden, a.hidden, lora_rank=8, lora_alpha=16, has_bias=False, compute_dtype=dtype)
            cell.weight.requires_grad = False
            return cell
        return make

    class PlainLoRA(nn.Cell):
        """W x + (B A x) * alpha/r without MindPet: the scaling on the output, or (folded) on B."""
        def __init__(self, folded):
            super().__init__()
            self.weight = Parameter(Tensor(rng.standard_normal((a.hidden, a.hidden)).astype(np.float32) * 0.02),
                                    requires_grad=False)
            self.lora_a = Parameter(Tensor(rng.standard_normal((8, a.hidden)).astype(np.float32) * 0.02))
            self.lora_b = Parameter(Tensor(np.zeros((a.hidden, 8), np.float32)))
            self.matmul = ops.MatMul(transpose_b=True)
            self.folded, self.scaling = folded, 2.0

        def construct(self, x):
            dense = self.matmul(x, self.weight)
            if self.folded:
                return dense + self.matmul(self.matmul(x, self.lora_a), self.lora_b * self.scaling)
            return dense + self.matmul(self.matmul(x, self.lora_a), self.lora_b) * self.scaling

    class Chain(nn.Cell):
        def __init__(self, make):
            super().__init__()
            self.layers = nn.CellList([make() for _ in range(a.layers)])

        def construct(self, x):
            for layer in self.layers:
                x = x + layer(x) * 0.1
            return x.mean()

    def compiled(net):
        params = net.trainable_params()
        grad = ms.grad(net, grad_position=0, weights=params) if params else ms.grad(net, grad_position=0)

        def step(x):
            return grad(x)
        return CompiledFunction(step, [net])

    x = Tensor(rng.standard_normal((a.rows, a.hidden)).astype(np.float32))
    variants = {"no adapter": Frozen, "LoRADense, float32": lora(ms.float32), "LoRADense, float16": lora(ms.float16),
                "plain LoRA": lambda: PlainLoRA(False), "plain LoRA, folded": lambda: PlainLoRA(True)}
    variants = {k: v for k, v in variants.items() if not a.only or k in a.only.split(";")}
    steps = {name: compiled(Chain(make)) for name, make in variants.items()}
    for step in steps.values():
        step(x)   # compile
    times = {name: [] for name in steps}
    for _ in range(a.rounds):
        for name, step in steps.items():
            began = time.perf_counter()
            out = step(x)
            (out[0] if isinstance(out, tuple) else out).asnumpy()
            times[name].append(time.perf_counter() - began)
    print(f"{a.layers} layers, input [{a.rows}, {a.hidden}], LoRA rank 8, forward + backward (median of {a.rounds}):")
    median = {name: float(np.median(ts)) for name, ts in times.items()}
    for name, seconds in median.items():
        extra = (seconds - median["no adapter"]) / a.layers
        print(f"  {name:<20} {seconds * 1e3:8.1f} ms" + (f"  ({extra * 1e3:.1f} ms a LoRA branch)" if extra > 0 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
