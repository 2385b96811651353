"""Parameter names across formats, and the shapes a spec expects.

mindtune stores weights under MindFormers' Llama names. Hugging Face Llama/Qwen2 names map one to one
(both use the "rotate half" rotary layout, so no permutation is needed; MindFormers' own convert_weight.py
permutes only Meta's original checkpoints). GGUF names map to the same places, but llama.cpp stores q/k rows
permuted for its interleaved rotary layout: `gguf_unpermute` undoes that.
"""
import re

import numpy as np

from mindtune.errors import CheckpointError

# per-layer names: Hugging Face suffix -> MindFormers suffix
_HF_LAYER = {
    "self_attn.q_proj.weight": "attention.wq.weight",
    "self_attn.k_proj.weight": "attention.wk.weight",
    "self_attn.v_proj.weight": "attention.wv.weight",
    "self_attn.o_proj.weight": "attention.wo.weight",
    "self_attn.q_proj.bias": "attention.wq.bias",
    "self_attn.k_proj.bias": "attention.wk.bias",
    "self_attn.v_proj.bias": "attention.wv.bias",
    "mlp.gate_proj.weight": "feed_forward.w1.weight",
    "mlp.down_proj.weight": "feed_forward.w2.weight",
    "mlp.up_proj.weight": "feed_forward.w3.weight",
    "input_layernorm.weight": "attention_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
}
_HF_GLOBAL = {
    "model.embed_tokens.weight": "model.tok_embeddings.embedding_weight",
    "model.norm.weight": "model.norm_out.weight",
    "lm_head.weight": "lm_head.weight",
}
_GGUF_LAYER = {
    "attn_q.weight": "attention.wq.weight",
    "attn_k.weight": "attention.wk.weight",
    "attn_v.weight": "attention.wv.weight",
    "attn_output.weight": "attention.wo.weight",
    "attn_q.bias": "attention.wq.bias",
    "attn_k.bias": "attention.wk.bias",
    "attn_v.bias": "attention.wv.bias",
    "ffn_gate.weight": "feed_forward.w1.weight",
    "ffn_down.weight": "feed_forward.w2.weight",
    "ffn_up.weight": "feed_forward.w3.weight",
    "attn_norm.weight": "attention_norm.weight",
    "ffn_norm.weight": "ffn_norm.weight",
}
_GGUF_GLOBAL = {
    "token_embd.weight": "model.tok_embeddings.embedding_weight",
    "output_norm.weight": "model.norm_out.weight",
    "output.weight": "lm_head.weight",
}
_MF_LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)")
_HF_LAYER_RE = re.compile(r"model\.layers\.(\d+)\.(.+)")
_GGUF_LAYER_RE = re.compile(r"blk\.(\d+)\.(.+)")


def _map(name, global_map, layer_re, layer_map, layer_prefix):
    if name in global_map:
        return global_map[name]
    m = layer_re.fullmatch(name)
    if m and m.group(2) in layer_map:
        return f"{layer_prefix}{m.group(1)}.{layer_map[m.group(2)]}"
    return None


def hf_to_mindtune(name: str):
    """The MindFormers name of a Hugging Face tensor, or None if it is not a Llama weight."""
    return _map(name, _HF_GLOBAL, _HF_LAYER_RE, _HF_LAYER, "model.layers.")


def mindtune_to_hf(name: str):
    inverse_global = {v: k for k, v in _HF_GLOBAL.items()}
    inverse_layer = {v: k for k, v in _HF_LAYER.items()}
    return _map(name, inverse_global, _MF_LAYER, inverse_layer, "model.layers.")


def gguf_to_mindtune(name: str):
    return _map(name, _GGUF_GLOBAL, _GGUF_LAYER_RE, _GGUF_LAYER, "model.layers.")


def mindtune_to_gguf(name: str):
    m = _MF_LAYER.fullmatch(name)
    if m:
        inverse = {v: k for k, v in _GGUF_LAYER.items()}
        return f"blk.{m.group(1)}.{inverse[m.group(2)]}" if m.group(2) in inverse else None
    return {v: k for k, v in _GGUF_GLOBAL.items()}.get(name)


def gguf_unpermute(array: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row order. Its converter reorders each head's rows from [first half, second half]
    (rotate-half pairs i and i + d/2) to interleaved pairs (2i, 2i+1); we go back to the halves."""
    rows = array.shape[0]
    return array.reshape(heads, rows // heads // 2, 2, *array.shape[1:]).swapaxes(1, 2).reshape(array.shape)


def expected_shapes(spec) -> dict:
    """{MindFormers name: shape} of every tensor a model of `spec` has."""
    h, kv, ffn = spec.hidden_size, spec.num_kv_heads * spec.head_dim, spec.intermediate_size
    shapes = {"model.tok_embeddings.embedding_weight": (spec.vocab_size, h), "model.norm_out.weight": (h,)}
    if not spec.tie_word_embeddings:
        shapes["lm_head.weight"] = (spec.vocab_size, h)
    for i in range(spec.num_layers):
        p = f"model.layers.{i}."
        shapes.update({p + "attention.wq.weight": (h, h), p + "attention.wk.weight": (kv, h),
                       p + "attention.wv.weight": (kv, h), p + "attention.wo.weight": (h, h),
                       p + "feed_forward.w1.weight": (ffn, h), p + "feed_forward.w2.weight": (h, ffn),
                       p + "feed_forward.w3.weight": (ffn, h), p + "attention_norm.weight": (h,),
                       p + "ffn_norm.weight": (h,)})
        if spec.qkv_bias:
            shapes.update({p + "attention.wq.bias": (h,), p + "attention.wk.bias": (kv,),
                           p + "attention.wv.bias": (kv,)})
    return shapes


def check_weights(spec, weights: dict, where: str, to_source=None):
    """Every expected tensor present with its shape, nothing extra. `to_source` maps a MindFormers name to the
    name the user's file spells it with, so errors name the tensor the user can find."""
    show = to_source or (lambda name: name)
    expected = expected_shapes(spec)
    for name, array in weights.items():
        if name not in expected:
            raise CheckpointError(f"{where}: tensor {show(name)!r} does not fit this model's config")
        if tuple(array.shape) != expected[name]:
            raise CheckpointError(f"{where}: tensor {show(name)!r} has shape {tuple(array.shape)}, "
                                  f"the config implies {expected[name]}")
    missing = [n for n in expected if n not in weights]
    if missing:
        raise CheckpointError(f"{where}: missing tensor {show(missing[0])!r}"
                              + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
