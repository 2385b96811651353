"""An independent Llama forward pass in plain numpy (float64), the oracle for logit-parity tests.

Written from the Llama paper/HF semantics, not from MindFormers: RMSNorm, rotary embeddings in the
"rotate half" layout, grouped-query attention with a causal mask, SwiGLU MLP, optional tied output.
Takes weights by MindFormers parameter name (what mindtune stores).
"""
import numpy as np


def rms_norm(x, weight, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def rotary(x, positions, theta):
    """x: [heads, seq, head_dim]; rotate pairs (i, i + head_dim/2) by position * theta^(-2i/head_dim)."""
    half = x.shape[-1] // 2
    inv_freq = theta ** (-np.arange(half, dtype=np.float64) * 2 / x.shape[-1])
    angles = positions[:, None] * inv_freq[None, :]          # [seq, half]
    cos, sin = np.cos(angles), np.sin(angles)
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def llama_logits(weights, spec, ids, prefix_kv=None):
    """Logits [seq, vocab] (float64) of one unpadded sequence `ids`.

    prefix_kv: optional per-layer (key, value) [kv_heads, P, head_dim], unrotated, that every token attends to
    before its own causal context (prefix tuning); the sequence's positions still start at 0."""
    w = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    ids = np.asarray(ids)
    seq, hd = len(ids), spec.head_dim
    nq, nkv = spec.num_heads, spec.num_kv_heads
    x = w["model.tok_embeddings.embedding_weight"][ids]
    pos = np.arange(seq, dtype=np.float64)
    causal = np.triu(np.full((seq, seq), -np.inf), 1)
    for i in range(spec.num_layers):
        p = f"model.layers.{i}."
        h = rms_norm(x, w[p + "attention_norm.weight"], spec.rms_norm_eps)
        q, k, v = (h @ w[p + f"attention.{n}.weight"].T + w.get(p + f"attention.{n}.bias", 0.0)
                   for n in ("wq", "wk", "wv"))
        q = rotary(q.reshape(seq, nq, hd).transpose(1, 0, 2), pos, spec.rope_theta)
        k = rotary(k.reshape(seq, nkv, hd).transpose(1, 0, 2), pos, spec.rope_theta)
        v = v.reshape(seq, nkv, hd).transpose(1, 0, 2)
        mask = causal
        if prefix_kv is not None:
            pk, pv = (np.asarray(a, np.float64) for a in prefix_kv[i])
            k, v = np.concatenate([pk, k], axis=1), np.concatenate([pv, v], axis=1)
            mask = np.concatenate([np.zeros((seq, pk.shape[1])), causal], axis=1)
        group = nq // nkv
        k, v = np.repeat(k, group, axis=0), np.repeat(v, group, axis=0)   # query head j uses kv head j // group
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(hd) + mask
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        attn = (scores / scores.sum(-1, keepdims=True)) @ v              # [heads, seq, hd]
        x = x + attn.transpose(1, 0, 2).reshape(seq, nq * hd) @ w[p + "attention.wo.weight"].T
        h = rms_norm(x, w[p + "ffn_norm.weight"], spec.rms_norm_eps)
        gate, up = h @ w[p + "feed_forward.w1.weight"].T, h @ w[p + "feed_forward.w3.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ w[p + "feed_forward.w2.weight"].T
    x = rms_norm(x, w["model.norm_out.weight"], spec.rms_norm_eps)
    out = w["lm_head.weight"] if "lm_head.weight" in w else w["model.tok_embeddings.embedding_weight"]
    return x @ out.T
