"""Would compiling one decoder layer and reusing it for all 30 shorten the first step? A diagnostic, not mindtune's path.

    python bench/diagnose_layer_reuse.py [--steps 3]

MindSpore 2.9 compiles a graph-mode training step with every layer unrolled (its cell reuse, `lazy_inline`, is
refused by the CPU backend), so the compile grows with the number of layers. This script writes SmolLM2-135M's
LoRA step as plain functions (random weights; the same shapes as bench_train.py: 4 x 256, LoRA r8 on q/k/v/o) and
runs it in up to three ways, each in its own process:

  unrolled  one compiled graph (ms.jit) for the whole forward + backward, the 30 layers unrolled (what mindtune does)
  shared    the same one graph, but every layer's weights enter the layer function as computed tensors (p * 1)
            rather than Parameters, so every call has the same argument types: does MindSpore's frontend then
            infer and differentiate the layer once for all 30? (It did not: 70 s against 49 s, 12-04.)
  reused    PyNative mode; `--block K` layers are one ms.jit function taking their weights as arguments, called
            30 / K times, so it compiles once; the embedding, loss and gradient bookkeeping run eagerly

and prints, per way, the first step (compile + run), the median step after it, the first batch's loss and
gradient norm (every way computes the same thing), and the peak resident memory; for "reused" also a forward
pass alone (`forward_s`: the 30 compiled layer calls with the eager embedding and loss).
"""
import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

HIDDEN, LAYERS, HEADS, KV_HEADS, FFN, VOCAB, RANK, ALPHA = 576, 30, 9, 3, 1536, 49152, 8, 16
HEAD_DIM = HIDDEN // HEADS
BATCH, SEQ = 4, 256


def child(way: str, steps: int, block: int) -> dict:
    import mindspore as ms
    from mindspore import Parameter, Tensor, ops

    ms.set_context(mode=ms.PYNATIVE_MODE if way == "reused" else ms.GRAPH_MODE, device_target="CPU")
    rng = np.random.default_rng(0)

    def weight(*shape, scale=0.02, trainable=False, name="", value=None):
        value = Tensor(rng.normal(0, scale, shape).astype(np.float32) if value is None else value)
        # "unrolled", "shared": Parameters, as in mindtune (a tensor a graph closes over is compiled in as a constant).
        # "reused": the frozen weights are plain tensors, since a PyNative ms.jit function compiles again for every
        # new Parameter passed to it (about 25 ms for a two-product graph), but once for tensors of the same shapes.
        if trainable or way != "reused":
            return Parameter(value, name=name, requires_grad=trainable)
        return value

    def norm(name):
        return weight(name=name, value=np.ones(HIDDEN, np.float32))

    embedding = weight(VOCAB, HIDDEN, name="embedding")
    final_norm = norm("final_norm")
    frozen, lora = [], []
    for i in range(LAYERS):
        frozen.append([norm(f"n1.{i}"),
                       weight(HIDDEN, HIDDEN, name=f"wq.{i}"), weight(KV_HEADS * HEAD_DIM, HIDDEN, name=f"wk.{i}"),
                       weight(KV_HEADS * HEAD_DIM, HIDDEN, name=f"wv.{i}"), weight(HIDDEN, HIDDEN, name=f"wo.{i}"),
                       norm(f"n2.{i}"),
                       weight(FFN, HIDDEN, name=f"w1.{i}"), weight(HIDDEN, FFN, name=f"w2.{i}"),
                       weight(FFN, HIDDEN, name=f"w3.{i}")])
        outs = (HIDDEN, KV_HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM, HIDDEN)
        lora.append([p for j, out in enumerate(outs)
                     for p in (weight(RANK, HIDDEN, trainable=True, name=f"a{j}.{i}"),
                               weight(out, RANK, trainable=True, name=f"b{j}.{i}"))])
    trainable = [p for layer in lora for p in layer]

    positions = np.arange(SEQ)[:, None] / (100000.0 ** (np.arange(0, HEAD_DIM, 2) / HEAD_DIM))[None]
    angles = np.concatenate([positions, positions], axis=-1).astype(np.float32)
    cos, sin = Tensor(np.cos(angles)), Tensor(np.sin(angles))
    mask = Tensor(np.triu(np.full((SEQ, SEQ), -1e9, np.float32), 1))
    matmul_t = ops.MatMul(transpose_b=True)
    scaling = ALPHA / RANK

    def rms(x, w):
        return x * ops.rsqrt((x * x).mean(-1, keep_dims=True) + 1e-5) * w

    def lora_dense(x2, w, a, b):
        return matmul_t(x2, w) + matmul_t(matmul_t(x2, a), b) * scaling

    def rope(x):
        half = HEAD_DIM // 2
        rotated = ops.concat((-x[..., half:], x[..., :half]), -1)
        return x * cos + rotated * sin

    def layer(h, n1, wq, wk, wv, wo, n2, w1, w2, w3, aq, bq, ak, bk, av, bv, ao, bo):
        x2 = rms(h, n1).reshape(BATCH * SEQ, HIDDEN)
        q = lora_dense(x2, wq, aq, bq).reshape(BATCH, SEQ, HEADS, HEAD_DIM).transpose(0, 2, 1, 3)
        k = lora_dense(x2, wk, ak, bk).reshape(BATCH, SEQ, KV_HEADS, HEAD_DIM).transpose(0, 2, 1, 3)
        v = lora_dense(x2, wv, av, bv).reshape(BATCH, SEQ, KV_HEADS, HEAD_DIM).transpose(0, 2, 1, 3)
        q, k = rope(q), rope(k)
        group = HEADS // KV_HEADS
        k = ops.tile(k.expand_dims(2), (1, 1, group, 1, 1)).reshape(BATCH, HEADS, SEQ, HEAD_DIM)
        v = ops.tile(v.expand_dims(2), (1, 1, group, 1, 1)).reshape(BATCH, HEADS, SEQ, HEAD_DIM)
        scores = ops.softmax(ops.matmul(q, k.swapaxes(-1, -2)) / HEAD_DIM ** 0.5 + mask, -1)
        attention = ops.matmul(scores, v).transpose(0, 2, 1, 3).reshape(BATCH * SEQ, HIDDEN)
        h = h + lora_dense(attention, wo, ao, bo).reshape(BATCH, SEQ, HIDDEN)
        x2 = rms(h, n2).reshape(BATCH * SEQ, HIDDEN)
        return h + matmul_t(ops.silu(matmul_t(x2, w1)) * matmul_t(x2, w3), w2).reshape(BATCH, SEQ, HIDDEN)

    def layers(h, *weights):
        """`block` layers in a row; `weights` holds each one's arguments after h, layer by layer."""
        per = len(weights) // block
        for j in range(block):
            h = layer(h, *weights[j * per:(j + 1) * per])
        return h

    block_step = ms.jit(layers) if way == "reused" else layers

    def arguments(i):
        """Layer i's weights as the layer function receives them."""
        if way == "unrolled":
            return [*frozen[i], *lora[i]]
        if way == "shared":
            return [p * 1 for p in (*frozen[i], *lora[i])]
        # the trainable Parameters enter as tensors (p * 1) for the same reason; the product is differentiable
        return [*frozen[i], *[p * 1 for p in lora[i]]]

    def loss_fn(input_ids, labels):
        h = ops.gather(embedding, input_ids, 0)
        for i in range(0, LAYERS, block):
            weights = []
            for j in range(i, i + block):     # plain loops: graph mode parses one comprehension level only
                weights += arguments(j)
            h = block_step(h, *weights)
        logits = matmul_t(rms(h, final_norm).reshape(BATCH * SEQ, HIDDEN), embedding)
        return ops.cross_entropy(logits, labels.reshape(-1))

    grad_fn = ms.value_and_grad(loss_fn, None, trainable)
    if way != "reused":
        grad_fn = ms.jit(grad_fn)
    data = rng.integers(0, VOCAB, (steps + 1, BATCH, SEQ + 1))

    def batch(s):
        return Tensor(data[s, :, :-1].astype(np.int32)), Tensor(data[s, :, 1:].astype(np.int32))

    times, losses, grad_norms = [], [], []
    for s in range(steps + 1):
        t0 = time.perf_counter()
        loss, grads = grad_fn(*batch(s))
        losses.append(float(loss.asnumpy()))
        grad_norms.append(float(np.sqrt(sum((g.asnumpy().astype(np.float64) ** 2).sum() for g in grads))))
        times.append(time.perf_counter() - t0)
    forward_s = None                # the second of two forwards alone (the first may still compile pieces)
    for s in range(2 if way == "reused" else 0):
        t0 = time.perf_counter()
        loss_fn(*batch(s)).asnumpy()
        forward_s = round(time.perf_counter() - t0, 2)
    return dict(way=way, block=block, first_step_s=round(times[0], 1), step_s=round(float(np.median(times[1:])), 3),
                forward_s=forward_s, loss=round(losses[0], 5), grad_norm=round(grad_norms[0], 5),
                peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--only", default="unrolled,reused", help="ways, comma-separated (unrolled, shared, reused)")
    p.add_argument("--block", type=int, default=1, help="layers in one compiled function for 'reused' (divides 30)")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.steps, a.block if a.child == "reused" else 1)), flush=True)
        return 0
    if LAYERS % a.block:
        p.error(f"--block {a.block} does not divide the {LAYERS} layers")
    for way in a.only.split(","):
        t0 = time.perf_counter()
        command = [sys.executable, __file__, "--child", way, "--steps", str(a.steps), "--block", str(a.block)]
        out = subprocess.run(command, capture_output=True, text=True)
        if out.returncode:
            print(out.stderr[-3000:], file=sys.stderr)
            return out.returncode
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["process_s"] = round(time.perf_counter() - t0, 1)
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
