"""A Llama decoder with a static key/value cache, written with MindSpore ops, for generation on CPU and Ascend.

MindFormers' own cache path (`use_past=True`) fails on CPU in ApplyRotaryPosEmb, so generation runs on this
cell instead. It reads the same weights dict (MindFormers parameter names) as the training network, so a
fine-tuned or LoRA-merged model generates without conversion.

One cell serves prefill and decode: `step` writes S new tokens into cache slots and attends over the whole
cache with a mask built on the host. S = prompt block length for prefill and 1 for decode, so MindSpore
compiles two graphs and reuses them. The host owns everything that varies per row (left padding, rotary
positions, prefix slots), which keeps the graph free of dynamic shapes.
"""
import numpy as np

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

from mindtune.errors import CheckpointError


def fused_weights(spec, weights: dict, dtype=np.float32) -> dict:
    """The decoder's parameters from MindFormers-named weights, arranged for few kernels per step: q/k/v and
    gate/up fused into one matrix each, matrices pre-transposed to [in, out], each RMSNorm weight folded into the
    rows of the matrix that consumes the normalised activations, and the 1/sqrt(head_dim) score scale folded
    into the q columns (rotary is linear, so scaling q before it is the same)."""
    def get(name):
        if name not in weights:
            raise CheckpointError(f"generation weights: missing tensor {name!r}")
        return np.asarray(weights[name], np.float32)

    out = {}
    emb = get("model.tok_embeddings.embedding_weight")
    head = emb if spec.tie_word_embeddings else get("lm_head.weight")
    out["lm_head"] = np.ascontiguousarray(head.T * get("model.norm_out.weight")[:, None])
    scale = np.float32(1.0 / np.sqrt(spec.head_dim))
    for i in range(spec.num_layers):
        p = f"model.layers.{i}."
        qkv = np.concatenate([get(p + "attention.wq.weight") * scale, get(p + "attention.wk.weight"),
                              get(p + "attention.wv.weight")], axis=0)
        out[f"l{i}.qkv"] = np.ascontiguousarray(qkv.T * get(p + "attention_norm.weight")[:, None])
        if spec.qkv_bias:
            out[f"l{i}.qkv_bias"] = np.concatenate([get(p + "attention.wq.bias") * scale,
                                                    get(p + "attention.wk.bias"), get(p + "attention.wv.bias")])
        out[f"l{i}.wo"] = np.ascontiguousarray(get(p + "attention.wo.weight").T)
        gate_up = np.concatenate([get(p + "feed_forward.w1.weight"), get(p + "feed_forward.w3.weight")], axis=0)
        out[f"l{i}.gate_up"] = np.ascontiguousarray(gate_up.T * get(p + "ffn_norm.weight")[:, None])
        out[f"l{i}.down"] = np.ascontiguousarray(get(p + "feed_forward.w2.weight").T)
    return {k: v.astype(dtype) if v.ndim == 2 else v for k, v in out.items()}


class RMSNorm(nn.Cell):
    """x / sqrt(mean(x^2) + eps); the weight lives in the next matrix (see `fused_weights`). Ascend profiles use
    the fused RmsNorm kernel (none exists on CPU)."""

    def __init__(self, hidden, eps, fused=False):
        super().__init__()
        self.eps = eps
        self.fused = fused
        self.ones = Tensor(np.ones(hidden, np.float32)) if fused else None

    def construct(self, x):
        if self.fused:
            return ops.rms_norm(x, self.ones.astype(x.dtype), self.eps)[0]
        if x.dtype == ms.float32:
            return x * ops.rsqrt(ops.mean(x * x, -1, keep_dims=True) + self.eps)
        xf = x.astype(ms.float32)
        return (xf * ops.rsqrt(ops.mean(xf * xf, -1, keep_dims=True) + self.eps)).astype(x.dtype)


class DecoderLayer(nn.Cell):
    """One Llama block over the cache. Written for few kernels per decode step (the step is launch-bound on
    CPU): q and k are rotated together, rotate-half is one matmul with a constant matrix, the 1/sqrt(d) score
    scale is folded into the q weights (see `fused_weights`), and a one-token step needs no transposes."""

    def __init__(self, spec, params, index, batch, max_len, dtype, fused_norm=False):
        super().__init__()
        self.nq, self.nkv, self.hd = spec.num_heads, spec.num_kv_heads, spec.head_dim
        self.group = self.nq // self.nkv
        self.ffn = spec.intermediate_size
        g = params
        self.qkv = g[f"l{index}.qkv"]
        self.qkv_bias = g.get(f"l{index}.qkv_bias")
        self.wo = g[f"l{index}.wo"]
        self.gate_up = g[f"l{index}.gate_up"]
        self.down = g[f"l{index}.down"]
        self.norm = RMSNorm(spec.hidden_size, spec.rms_norm_eps, fused_norm)
        shape = (batch, self.nkv, max_len, self.hd)
        self.k_cache = Parameter(Tensor(np.zeros(shape), dtype), name=f"k_cache{index}", requires_grad=False)
        self.v_cache = Parameter(Tensor(np.zeros(shape), dtype), name=f"v_cache{index}", requires_grad=False)
        self.scatter = ops.ScatterNdUpdate()
        self.matmul = ops.MatMul()
        self.scores = ops.BatchMatMul(transpose_b=True)
        self.weighted = ops.BatchMatMul()
        self.dtype = dtype

    def construct(self, x, cos, sin, rotate, mask, slots):
        """x: [B*S, hidden] (2-D, so every projection is one plain matmul, no broadcast weight copies)."""
        b, s = cos.shape[0], cos.shape[1]
        nq, nkv, hd = self.nq, self.nkv, self.hd
        qkv = self.matmul(self.norm(x), self.qkv)
        if self.qkv_bias is not None:
            qkv = qkv + self.qkv_bias
        qk, v = ops.split(qkv, ((nq + nkv) * hd, nkv * hd), 1)
        qk = qk.reshape(b, s, nq + nkv, hd)
        qk = qk * cos + ops.matmul(qk, rotate) * sin               # rotary on q and k at once
        q, k = ops.split(qk, (nq, nkv), 2)
        if s == 1:   # one token: [B, 1, heads, hd] is already [B, heads, 1, hd] in memory
            q = q.reshape(b, nkv, self.group, hd)
            k = k.reshape(b, nkv, 1, hd)
            v = v.reshape(b, nkv, 1, hd)
        else:
            q = q.transpose(0, 2, 1, 3).reshape(b, nkv, self.group * s, hd)
            k = k.transpose(0, 2, 1, 3)
            v = v.reshape(b, s, nkv, hd).transpose(0, 2, 1, 3)
        # write the new keys/values into their slots, then attend over the whole cache
        k_all = ops.depend(self.k_cache, self.scatter(self.k_cache, slots, k))
        v_all = ops.depend(self.v_cache, self.scatter(self.v_cache, slots, v))
        # grouped-query attention without repeating kv: the query heads of a group share a kv head
        scores = self.scores(q, k_all)
        if self.dtype != ms.float32:
            scores = scores.astype(ms.float32)
        probs = ops.softmax(scores.reshape(b, nkv, self.group, s, -1) + mask, -1)
        if self.dtype != ms.float32:
            probs = probs.astype(self.dtype)
        attn = self.weighted(probs.reshape(b, nkv, self.group * s, -1), v_all)
        if s == 1:
            attn = attn.reshape(b, nq * hd)
        else:
            attn = attn.reshape(b, nq, s, hd).transpose(0, 2, 1, 3).reshape(b * s, nq * hd)
        x = x + self.matmul(attn, self.wo)
        gate, up = ops.split(self.matmul(self.norm(x), self.gate_up), (self.ffn, self.ffn), 1)
        return x + self.matmul(ops.silu(gate) * up, self.down)


class CachedDecoder(nn.Cell):
    """logits_last = decoder(x, cos, sin, mask, slots)

    x: [B, S, hidden] input embeddings of the S new tokens (looked up on the host);
    cos, sin: [B, S, 1, head_dim] rotary tables at each new token's position;
    mask: [B, 1, 1, S, max_len] additive (0 where a new token may attend to a cache slot, -1e9 elsewhere);
    slots: int32 [B, kv_heads, S, 3] cache indices (b, head, slot) the new keys/values are written to.
    Returns float32 logits of the last new token, [B, vocab].
    """

    def __init__(self, spec, weights: dict, batch: int, max_len: int, dtype=ms.float32, fused_norm=False):
        super().__init__()
        np_dtype = np.float16 if dtype == ms.float16 else np.float32
        arrays = fused_weights(spec, weights, np_dtype)
        self.params = {k: Parameter(Tensor(v, dtype if v.ndim == 2 else ms.float32), name=k, requires_grad=False)
                       for k, v in arrays.items()}
        self.layers = nn.CellList([DecoderLayer(spec, self.params, i, batch, max_len, dtype, fused_norm)
                                   for i in range(spec.num_layers)])
        self.norm = RMSNorm(spec.hidden_size, spec.rms_norm_eps, fused_norm)
        # rotate-half as a matrix: x @ rotate = concat(-x2, x1)
        half = spec.head_dim // 2
        rotate = np.zeros((spec.head_dim, spec.head_dim), np.float32)
        rotate[np.arange(half) + half, np.arange(half)] = -1.0
        rotate[np.arange(half), np.arange(half) + half] = 1.0
        self.rotate = Tensor(rotate, dtype)
        self.lm_head = self.params["lm_head"]
        self.dtype = dtype
        self.matmul = ops.MatMul()

    def construct(self, x, cos, sin, mask, slots):
        b, s, hidden = x.shape
        x = x.astype(self.dtype).reshape(b * s, hidden)
        cos, sin = cos.astype(self.dtype), sin.astype(self.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin, self.rotate, mask, slots)
        h = self.norm(x.reshape(b, s, hidden)[:, -1, :])
        return self.matmul(h, self.lm_head).astype(ms.float32)

    def set_weights(self, spec, weights: dict):
        """Replace the weights in place (same shapes): no recompilation."""
        arrays = fused_weights(spec, weights)
        unused = sorted(n for n in weights if n.endswith(".bias") and ".attention.w" in n) if not spec.qkv_bias \
            else []
        new, gone = sorted(set(arrays) - set(self.params)), sorted(set(self.params) - set(arrays))
        if unused or new or gone:
            what = f"q/k/v biases ({unused[0]}, ...) the spec has no place for" if unused else \
                f"tensors {', '.join((new or gone)[:2])} {'not in' if new else 'missing from'} the built decoder"
            raise CheckpointError(f"generation weights: {what}; a changed architecture (e.g. BitFit's added "
                                  "biases: qkv_bias) needs a new Generator built with the new spec")
        for name, array in arrays.items():
            param = self.params[name]
            if tuple(param.shape) != array.shape:
                raise CheckpointError(f"generation weights: {name} has shape {array.shape}, expected {param.shape}")
            param.set_data(Tensor(array, param.dtype))

    def reset_cache(self, prefix=None):
        """Zero the cache; `prefix` optionally gives per-layer (k, v) arrays [kv_heads, P, head_dim] that fill
        the first P slots of every row (prefix tuning)."""
        if prefix is not None:
            _check_prefix(prefix, len(self.layers), self.layers[0].k_cache.shape)
        for i, layer in enumerate(self.layers):
            for j, cache in enumerate((layer.k_cache, layer.v_cache)):
                data = np.zeros(cache.shape, np.float32)
                if prefix is not None:
                    kv = np.asarray(prefix[i][j], np.float32)
                    data[:, :, :kv.shape[1], :] = kv[None]
                cache.set_data(Tensor(data, cache.dtype))


def _check_prefix(prefix, layers: int, cache_shape):
    """Per-layer (key, value) prefixes must be [kv_heads, P, head_dim] for every layer, P within the cache."""
    _, kv_heads, slots, head_dim = cache_shape
    shapes = {np.shape(t) for pair in prefix for t in pair}
    if len(prefix) != layers or any(len(pair) != 2 for pair in prefix) or len(shapes) != 1 or \
            len(next(iter(shapes))) != 3:
        raise CheckpointError(f"prefix: expected {layers} (key, value) pairs of one shape [kv_heads, P, head_dim], "
                              f"got {len(prefix)} with shapes {sorted(shapes)[:2]}")
    heads, p, dim = next(iter(shapes))
    if (heads, dim) != (kv_heads, head_dim) or p > slots:
        raise CheckpointError(f"prefix: shape {(heads, p, dim)}, this model needs [kv_heads={kv_heads}, "
                              f"P<={slots}, head_dim={head_dim}]")
