"""The attention core of SmolLM2's layers on CPU, forward + backward: MindSpore with the key/value heads repeated
(MindFormers' `_repeat_kv`), grouped (each kv head's query heads as one block), and mindtune's CPU shim (grouped,
the queries scaled instead of the scores, and the backward written out without a broadcast:
`mindtune/shims.py: AttentionCore`), and PyTorch's explicit attention and `scaled_dot_product_attention`
(bench/ref_torch_attention.py, REF_PYTHON's own environment) on the same shapes, in one run.

    python bench/diagnose_attention.py [--batch 4] [--seq 256] [--layers 10] [--rounds 5]

Each variant chains `--layers` attention cores (the output of one is the next one's queries; keys and values
shared), takes the gradient of the sum in queries, keys and values, and prints the median time per layer.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
HEADS, KV_HEADS, HEAD_DIM = 9, 3, 64   # SmolLM2-135M


def shim_attention_core():
    """The attention core the CPU shim gives MindFormers' attention cells (taken from a tiny model built for CPU)."""
    from mindtune.device import resolve_profile, setup_context
    from mindtune.models.build import build_llama
    from mindtune.models.spec import get_preset

    profile = resolve_profile("cpu")
    setup_context(profile)
    llama = build_llama(get_preset("tiny"), profile, seq_length=8)
    return next(cell.attention_core for _, cell in llama.cells_and_names() if hasattr(cell, "attention_core"))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--layers", type=int, default=10)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()

    from mindtune import shims
    shims.quiet_environment()
    import mindspore as ms
    from mindspore import Tensor, nn, ops

    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    b, t, rep = a.batch, a.seq, HEADS // KV_HEADS
    rng = np.random.default_rng(0)
    q = Tensor(rng.standard_normal((b, HEADS, t, HEAD_DIM)).astype(np.float32))
    k, v = (Tensor(rng.standard_normal((b, KV_HEADS, t, HEAD_DIM)).astype(np.float32)) for _ in range(2))
    mask = Tensor(np.triu(np.full((t, t), -10000.0, np.float32), 1)[None, None].repeat(b, 0))
    scores_t, product = ops.BatchMatMul(transpose_b=True), ops.BatchMatMul()
    core = shim_attention_core()

    class Chain(nn.Cell):
        def __init__(self, grouped, shim=False):
            super().__init__()
            self.grouped, self.shim = grouped, shim
            self.core = core

        def construct(self, q, k, v, mask):
            out = q
            for _ in range(a.layers):
                if self.shim:
                    scaled = (out * 0.125).reshape(b, KV_HEADS, rep * t, HEAD_DIM)
                    out, _ = self.core(scaled, k, v, ops.broadcast_to(mask, (b, HEADS, t, t)))
                    out = out.reshape(q.shape)
                    continue
                if self.grouped:
                    s = scores_t(out.reshape(b, KV_HEADS, rep * t, HEAD_DIM), k).reshape(b, HEADS, t, t)
                else:
                    keys = ops.tile(k.reshape(b, KV_HEADS, 1, t * HEAD_DIM), (1, 1, rep, 1)).reshape(q.shape)
                    s = scores_t(out, keys)
                probs = ops.softmax(s * 0.125 + ops.broadcast_to(mask, s.shape), -1)
                if self.grouped:
                    out = product(probs.reshape(b, KV_HEADS, rep * t, t), v).reshape(q.shape)
                else:
                    values = ops.tile(v.reshape(b, KV_HEADS, 1, t * HEAD_DIM), (1, 1, rep, 1)).reshape(q.shape)
                    out = product(probs, values)
            return out.sum()

    steps = {name: ms.jit(ms.grad(Chain(*form), grad_position=(0, 1, 2)))
             for name, form in (("MindSpore, kv heads repeated", (False,)), ("MindSpore, grouped", (True,)),
                                ("MindSpore, mindtune's CPU shim", (True, True)))}
    for step in steps.values():
        step(q, k, v, mask)   # compile
    times = {name: [] for name in steps}
    for _ in range(a.rounds):
        for name, step in steps.items():
            began = time.perf_counter()
            step(q, k, v, mask)[0].asnumpy()
            times[name].append(time.perf_counter() - began)
    result = {name: round(float(np.median(ts)) / a.layers * 1e3, 2) for name, ts in times.items()}
    python = os.environ.get("REF_PYTHON", "/tmp/ref-venv/bin/python")
    if os.path.exists(python):
        proc = subprocess.run([python, os.path.join(HERE, "ref_torch_attention.py"), "--batch", str(b), "--seq",
                               str(t), "--layers", str(a.layers), "--rounds", str(a.rounds)],
                              capture_output=True, text=True)
        result.update(json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else
                      {"PyTorch": proc.stderr.strip().splitlines()[-1:]})
    print(f"attention core, [{b}, {HEADS} heads ({KV_HEADS} kv), {t}, {HEAD_DIM}], forward + backward, "
          f"ms a layer (median of {a.rounds}):")
    for name, ms_per_layer in result.items():
        print(f"  {name:<34} {ms_per_layer}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
