"""GGUF (llama.cpp) file -> spec, weights by MindFormers name, and a tokenizer. Tensors are dequantised with
the `gguf` package."""
import os

import numpy as np

from mindtune.errors import CheckpointError
from mindtune.models.convert.names import check_weights, gguf_to_mindtune, gguf_unpermute, mindtune_to_gguf
from mindtune.models.convert.tokenizer import CONTROL, choose_pad_token, gguf_bpe_tokenizer
from mindtune.models.spec import ModelSpec

SUPPORTED_ARCH = ("llama", "qwen2")


def _field(reader, key, default=None):
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def read_gguf(path: str, max_position: int = 0):
    """Returns (spec, weights, tokenizer, tokenizer_meta) where tokenizer is a `tokenizers.Tokenizer`."""
    import gguf

    if not os.path.isfile(path):
        raise CheckpointError(f"GGUF file not found: {path}")
    try:
        reader = gguf.GGUFReader(path)
    except Exception as exc:  # the reader raises ValueError/struct errors with little context
        raise CheckpointError(f"{path}: not a readable GGUF file ({exc})") from None
    arch = _field(reader, "general.architecture")
    if arch not in SUPPORTED_ARCH:
        raise CheckpointError(f"{path}: architecture {arch!r} is not supported (known: {', '.join(SUPPORTED_ARCH)})")
    scaling = _field(reader, f"{arch}.rope.scaling.type")
    if scaling not in (None, "none"):
        raise CheckpointError(f"{path}: rope scaling {scaling!r} is not supported")

    tokenizer, meta = _tokenizer(reader, path)
    names = {t.name for t in reader.tensors}

    def need(key):
        value = _field(reader, f"{arch}.{key}")
        if value is None:
            raise CheckpointError(f"{path}: metadata key {arch}.{key} is missing")
        return value

    heads = int(need("attention.head_count"))
    spec = ModelSpec(
        vocab_size=int(_field(reader, f"{arch}.vocab_size", tokenizer.get_vocab_size())),
        hidden_size=int(need("embedding_length")), num_layers=int(need("block_count")), num_heads=heads,
        num_kv_heads=int(_field(reader, f"{arch}.attention.head_count_kv", heads)),
        intermediate_size=int(need("feed_forward_length")),
        rms_norm_eps=float(f"{float(need('attention.layer_norm_rms_epsilon')):.6g}"),  # stored as float32
        rope_theta=float(_field(reader, f"{arch}.rope.freq_base", 10000.0)),
        max_position=max_position or int(_field(reader, f"{arch}.context_length", 4096)),
        tie_word_embeddings="output.weight" not in names, qkv_bias="blk.0.attn_q.bias" in names,
        bos_token_id=tokenizer.token_to_id(meta["bos_token"]), eos_token_id=tokenizer.token_to_id(meta["eos_token"]),
        pad_token_id=tokenizer.token_to_id(meta["pad_token"])).check()
    rope_dim = _field(reader, f"{arch}.rope.dimension_count")
    if rope_dim is not None and int(rope_dim) != spec.head_dim:
        raise CheckpointError(f"{path}: partial rotary (rope.dimension_count {rope_dim} < head_dim "
                              f"{spec.head_dim}) is not supported")

    weights, source = {}, {}
    for tensor in reader.tensors:
        if tensor.name == "rope_freqs.weight":
            continue
        name = gguf_to_mindtune(tensor.name)
        if name is None:
            raise CheckpointError(f"{path}: tensor {tensor.name!r} is not a Llama weight mindtune knows")
        array = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        array = array.reshape([int(d) for d in reversed(tensor.shape)])  # GGUF lists dims innermost first
        if arch == "llama" and (".attention.wq." in name or ".attention.wk." in name):
            n = spec.num_heads if ".wq." in name else spec.num_kv_heads
            if array.shape[0] % (2 * n):
                raise CheckpointError(f"{path}: tensor {tensor.name!r} has shape {array.shape}, "
                                      f"not a multiple of {n} heads")
            array = gguf_unpermute(array, n)
        weights[name] = array
        source[name] = tensor.name
    check_weights(spec, weights, path, to_source=lambda n: source.get(n) or mindtune_to_gguf(n) or n)
    return spec, weights, tokenizer, meta


def _tokenizer(reader, path):
    model = _field(reader, "tokenizer.ggml.model")
    if model != "gpt2":
        raise CheckpointError(f"{path}: GGUF tokenizer model {model!r} is not supported (only byte-level BPE, "
                              "'gpt2'); convert the Hugging Face directory instead")
    tokens = _field(reader, "tokenizer.ggml.tokens")
    merges = _field(reader, "tokenizer.ggml.merges") or []
    types = _field(reader, "tokenizer.ggml.token_type") or [1] * len(tokens)
    tok = gguf_bpe_tokenizer(tokens, merges, types, _field(reader, "tokenizer.ggml.pre"),
                             bool(_field(reader, "tokenizer.ggml.add_space_prefix", False)), path)

    def token(key):
        idx = _field(reader, key)
        return None if idx is None or not 0 <= int(idx) < len(tokens) else tokens[int(idx)]

    template = _field(reader, "tokenizer.chat_template")
    bos, eos = token("tokenizer.ggml.bos_token_id"), token("tokenizer.ggml.eos_token_id")
    if eos is None:
        raise CheckpointError(f"{path}: metadata key tokenizer.ggml.eos_token_id is missing")
    controls = [t for t, kind in zip(tokens, types) if kind == CONTROL]
    pad = choose_pad_token(token("tokenizer.ggml.padding_token_id"),
                           [t for t in [token("tokenizer.ggml.unknown_token_id")] + controls if t],
                           bos, eos, template)
    meta = {"bos_token": bos or eos, "eos_token": eos, "pad_token": pad,
            "add_bos": bool(_field(reader, "tokenizer.ggml.add_bos_token", False)), "chat_template": template}
    return tok, meta
