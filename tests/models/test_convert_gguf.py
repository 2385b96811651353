"""GGUF -> mindtune on a synthetic llama.cpp-style file written with the `gguf` package: the q/k row
permutation is undone, quantised tensors are dequantised, and the BPE tokenizer is rebuilt exactly."""
import json
import os

import numpy as np
import pytest

from mindtune.cli import main
from mindtune.data.tokenizer import load_tokenizer
from mindtune.errors import CheckpointError
from mindtune.models.convert import convert
from mindtune.models.loading import TINY_TOKENIZER
from mindtune.models.model_dir import read_model_dir

CHAT = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
        "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
H, FFN, HEADS, KV_HEADS, LAYERS = 64, 96, 4, 2, 2
TEXTS = ["Hello world, 42 is the answer!", "  leading spaces\nand\ttabs", "<|im_start|>user\nhi<|im_end|>\n",
         "numbers 1234567 and symbols #@!", "unicode: café – naïve 😀"]


def llama_cpp_permute(w, heads):
    """What llama.cpp's converter does to q/k rows (halves -> interleaved pairs), written from its definition."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tiny_vocab():
    data = json.load(open(os.path.join(TINY_TOKENIZER, "tokenizer.json")))
    vocab = data["model"]["vocab"]
    tokens = [None] * len(vocab)
    for tok, i in vocab.items():
        tokens[i] = tok
    special = {t["id"] for t in data["added_tokens"] if t["special"]}
    merges = [" ".join(m) if isinstance(m, list) else m for m in data["model"]["merges"]]
    return tokens, merges, [3 if i in special else 1 for i in range(len(tokens))]


def hf_weights(seed=0, vocab=512):
    rng = np.random.default_rng(seed)
    kv = KV_HEADS * H // HEADS
    w = {"token_embd.weight": (vocab, H), "output_norm.weight": (H,)}
    for i in range(LAYERS):
        w.update({f"blk.{i}.attn_q.weight": (H, H), f"blk.{i}.attn_k.weight": (kv, H),
                  f"blk.{i}.attn_v.weight": (kv, H), f"blk.{i}.attn_output.weight": (H, H),
                  f"blk.{i}.ffn_gate.weight": (FFN, H), f"blk.{i}.ffn_up.weight": (FFN, H),
                  f"blk.{i}.ffn_down.weight": (H, FFN), f"blk.{i}.attn_norm.weight": (H,),
                  f"blk.{i}.ffn_norm.weight": (H,)})
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in w.items()}


def write_gguf(path, weights, quantize=(), arch="llama", pre="gpt2", extra=None):
    import gguf

    tokens, merges, types = tiny_vocab()
    writer = gguf.GGUFWriter(path, arch)
    writer.add_block_count(LAYERS)
    writer.add_context_length(256)
    writer.add_embedding_length(H)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(100000.0)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_merges(merges)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(2)          # as SmolLM2's file: the EOS, which chat text contains
    writer.add_chat_template(CHAT)
    for name, array in weights.items():
        if ".attn_q." in name:
            array = llama_cpp_permute(array, HEADS)
        elif ".attn_k." in name:
            array = llama_cpp_permute(array, KV_HEADS)
        if name in quantize:
            writer.add_tensor(name, gguf.quants.quantize(array, gguf.GGMLQuantizationType.Q8_0),
                              raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


MF = {"attn_q.weight": "attention.wq.weight", "attn_k.weight": "attention.wk.weight",
      "attn_v.weight": "attention.wv.weight", "attn_output.weight": "attention.wo.weight",
      "ffn_gate.weight": "feed_forward.w1.weight", "ffn_up.weight": "feed_forward.w3.weight",
      "ffn_down.weight": "feed_forward.w2.weight", "attn_norm.weight": "attention_norm.weight",
      "ffn_norm.weight": "ffn_norm.weight"}


def mf_name(name):
    if name.startswith("blk."):
        _, i, rest = name.split(".", 2)
        return f"model.layers.{i}.{MF[rest]}"
    return {"token_embd.weight": "model.tok_embeddings.embedding_weight",
            "output_norm.weight": "model.norm_out.weight"}[name]


def test_gguf_weights_spec_and_tokenizer(tmp_path):
    weights = hf_weights()
    quantized = "blk.1.ffn_up.weight"
    src = write_gguf(str(tmp_path / "m.gguf"), weights, quantize=[quantized])
    md = read_model_dir(convert(src, str(tmp_path / "mt")))
    spec = md.spec
    assert (spec.num_layers, spec.hidden_size, spec.num_heads, spec.num_kv_heads) == (LAYERS, H, HEADS, KV_HEADS)
    assert spec.tie_word_embeddings and spec.rope_theta == 100000.0 and spec.rms_norm_eps == 1e-5
    assert (spec.bos_token_id, spec.eos_token_id, spec.pad_token_id) == (1, 2, 0)   # pad moved off the EOS
    stored = md.weights()
    assert sorted(stored) == sorted(mf_name(n) for n in weights)
    for name, array in weights.items():
        if name == quantized:   # Q8_0: 8-bit blocks of 32 with one scale each
            np.testing.assert_allclose(stored[mf_name(name)], array, atol=np.abs(array).max() / 100)
            assert not np.array_equal(stored[mf_name(name)], array)
        else:
            assert np.array_equal(stored[mf_name(name)], array), name   # q/k un-permuted exactly

    ours, original = load_tokenizer(md.path), load_tokenizer(TINY_TOKENIZER)
    for text in TEXTS:
        assert ours.encode(text) == original.encode(text), text
        assert ours.decode(ours.encode(text), skip_special_tokens=False) == text
    assert ours.decode(ours.encode(TEXTS[2])) == "user\nhi\n"     # control tokens are special
    messages = [{"role": "user", "content": "hi"}]
    assert ours.apply_chat_template(messages, True) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert ours.pad_token == "<|endoftext|>"


def test_gguf_errors(tmp_path, capsys):
    weights = hf_weights()
    weights["blk.0.attn_v.weight"] = weights["blk.0.attn_v.weight"][:8]
    bad = write_gguf(str(tmp_path / "bad.gguf"), weights)
    with pytest.raises(CheckpointError, match="'blk.0.attn_v.weight' has shape \\(8, 64\\)"):
        convert(bad, str(tmp_path / "mt"))
    weights = hf_weights()
    weights["blk.0.attn_mystery.weight"] = np.ones((4, 4), np.float32)
    assert main(["convert", write_gguf(str(tmp_path / "u.gguf"), weights), str(tmp_path / "mt")]) == 2
    assert "'blk.0.attn_mystery.weight'" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="pre-tokenizer 'unheard-of'"):
        convert(write_gguf(str(tmp_path / "p.gguf"), hf_weights(), pre="unheard-of"), str(tmp_path / "mt"))
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(CheckpointError, match="junk.gguf"):
        convert(str(tmp_path / "junk.gguf"), str(tmp_path / "mt"))
