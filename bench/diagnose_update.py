"""The optimizer step after the gradients: the engine's own (`Trainer._update`, one graph: unscale, clip, the
overflow skip, AdamW) vs as it was before (two graphs, unscale + clip and then AdamW, the host reading the overflow
flag between them), on SmolLM2-135M's trainable parameter shapes with random gradients.

    python bench/diagnose_update.py [--what lora|full] [--rounds 3]

Each variant runs in its own process (compile times do not share caches), the two alternate for --rounds rounds,
and each prints its first call (compile + run) and the median of the next five calls.
"""
import argparse
import os
import subprocess
import sys
import time

LAYERS, HIDDEN, KV, FFN, VOCAB, RANK = 30, 576, 192, 1536, 49152, 8


def parameter_shapes(what: str) -> list:
    if what == "lora":   # r=8 on q/k/v/o: A [r, in] and B [out, r]
        return [shape for _ in range(LAYERS) for out in (HIDDEN, KV, KV, HIDDEN) for shape in ((RANK, HIDDEN),
                                                                                             (out, RANK))]
    per_layer = [(HIDDEN, HIDDEN), (KV, HIDDEN), (KV, HIDDEN), (HIDDEN, HIDDEN), (FFN, HIDDEN), (FFN, HIDDEN),
                 (HIDDEN, FFN), (HIDDEN,), (HIDDEN,)]
    return [(VOCAB, HIDDEN), (HIDDEN,)] + per_layer * LAYERS


def run_variant(variant: str, what: str):
    import tempfile

    import numpy as np
    import mindspore as ms
    from mindspore import nn, ops

    from mindtune.config import load_config
    from mindtune.device import resolve_profile, setup_context
    from mindtune.engine.optim import unscale_and_clip
    from mindtune.engine.trainer import Trainer, TrainTask

    profile = resolve_profile()
    setup_context(profile, graph_mode=True, seed=0)
    rng = np.random.default_rng(0)
    shapes = parameter_shapes(what)
    params = [ms.Parameter(ms.Tensor(rng.standard_normal(s, np.float32) * 0.01), name=f"p{i}")
              for i, s in enumerate(shapes)]
    # the engine's own update graph (train.max_grad_norm 1.0: clipped; fp32 on CPU: no loss scaling); its loss cell
    # is never run here
    config = load_config(None, ["train.lr=1e-4", "train.max_grad_norm=1.0"])
    trainer = Trainer(config, tempfile.mkdtemp(), TrainTask(nn.Identity(), (), params, None), profile)
    optimizer = trainer.optimizer
    grads = ms.mutable(tuple(ms.Tensor(rng.standard_normal(s, np.float32)) for s in shapes))
    one, lr = ms.Tensor(1.0, ms.float32), ms.Tensor(1e-4, ms.float32)

    # the engine before: two graphs, the host deciding between them
    @ms.jit
    def clip(grads, inv_scale, max_norm):
        return unscale_and_clip(grads, inv_scale, max_norm, True, False)

    @ms.jit
    def apply(grads, lr):
        ops.assign(optimizer.learning_rate, lr)
        return optimizer(grads)

    def one_graph():
        finite, _ = trainer._update(grads, one, one, lr)
        bool(finite.asnumpy())

    def two_graphs():
        clipped, finite, _ = clip(grads, one, one)
        if bool(finite.asnumpy()):
            apply(ms.mutable(clipped), lr)
        params[0].asnumpy()

    step = one_graph if variant == "one" else two_graphs
    began = time.perf_counter()
    step()
    first = time.perf_counter() - began
    times = []
    for _ in range(5):
        began = time.perf_counter()
        step()
        times.append(time.perf_counter() - began)
    print(f"{what} {variant} graph(s): first call {first:.2f} s, then {sorted(times)[2] * 1000:.1f} ms a step "
          f"({len(shapes)} tensors)", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--what", choices=("lora", "full"), default="lora")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variant", choices=("one", "two"), help=argparse.SUPPRESS)   # a child process
    args = parser.parse_args()
    if args.variant:
        return run_variant(args.variant, args.what)
    for _ in range(args.rounds):
        for variant in ("two", "one"):
            subprocess.run([sys.executable, os.path.abspath(__file__), "--what", args.what, "--variant", variant],
                           check=True)


if __name__ == "__main__":
    main()
