"""Hugging Face directory -> mindtune model directory -> Hugging Face directory, on synthetic checkpoints."""
import json
import os
import shutil

import numpy as np
import pytest
from safetensors import TensorSpec, serialize_file
from safetensors.numpy import load_file, save_file

from mindtune.cli import main
from mindtune.errors import CheckpointError
from mindtune.models.convert import convert, export_hf
from mindtune.models.loading import TINY_TOKENIZER
from mindtune.models.model_dir import read_model_dir

CHAT = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
        "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
# the Hugging Face -> MindFormers names, spelled out here independently of mindtune's own table
LAYER_NAMES = {"self_attn.q_proj.weight": "attention.wq.weight", "self_attn.k_proj.weight": "attention.wk.weight",
               "self_attn.v_proj.weight": "attention.wv.weight", "self_attn.o_proj.weight": "attention.wo.weight",
               "self_attn.q_proj.bias": "attention.wq.bias", "self_attn.k_proj.bias": "attention.wk.bias",
               "self_attn.v_proj.bias": "attention.wv.bias",
               "mlp.gate_proj.weight": "feed_forward.w1.weight", "mlp.up_proj.weight": "feed_forward.w3.weight",
               "mlp.down_proj.weight": "feed_forward.w2.weight", "input_layernorm.weight": "attention_norm.weight",
               "post_attention_layernorm.weight": "ffn_norm.weight"}


def hf_config(model_type="llama", tied=False):
    return {"architectures": ["LlamaForCausalLM" if model_type == "llama" else "Qwen2ForCausalLM"],
            "model_type": model_type, "vocab_size": 512, "hidden_size": 64, "intermediate_size": 96,
            "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 2, "rms_norm_eps": 1e-6,
            "rope_theta": 50000.0, "max_position_embeddings": 256, "tie_word_embeddings": tied,
            "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu"}


def hf_weights(config, seed=0):
    rng = np.random.default_rng(seed)
    h, ffn, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    kv = config["num_key_value_heads"] * h // config["num_attention_heads"]
    shapes = {"q_proj": (h, h), "k_proj": (kv, h), "v_proj": (kv, h), "o_proj": (h, h)}
    w = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,)}
    if not config["tie_word_embeddings"]:
        w["lm_head.weight"] = (v, h)
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w.update({p + f"self_attn.{n}.weight": s for n, s in shapes.items()})
        if config["model_type"] == "qwen2":
            w.update({p + f"self_attn.{n}.bias": (s[0],) for n, s in shapes.items() if n != "o_proj"})
        w.update({p + "mlp.gate_proj.weight": (ffn, h), p + "mlp.up_proj.weight": (ffn, h),
                  p + "mlp.down_proj.weight": (h, ffn), p + "input_layernorm.weight": (h,),
                  p + "post_attention_layernorm.weight": (h,)})
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in w.items()}


def write_hf(path, config, weights, shards=1, bf16=False):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    names = sorted(weights)
    files = {}
    for s in range(shards):
        part = {n: weights[n] for n in names[s::shards]}
        file = "model.safetensors" if shards == 1 else f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        if bf16:
            raw = {n: np.ascontiguousarray((a.view(np.uint32) >> 16).astype(np.uint16)) for n, a in part.items()}
            serialize_file({n: TensorSpec(dtype="bfloat16", shape=list(a.shape), data_ptr=raw[n].ctypes.data,
                                          data_len=raw[n].nbytes) for n, a in part.items()},
                           os.path.join(path, file), metadata={"format": "pt"})
        else:
            save_file(part, os.path.join(path, file), metadata={"format": "pt"})
        files.update({n: file for n in part})
    if shards > 1:
        with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": files}, f)
    shutil.copy(os.path.join(TINY_TOKENIZER, "tokenizer.json"), path)
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>",
                   "unk_token": "<|endoftext|>", "chat_template": CHAT, "add_bos_token": False}, f)
    return path


def mindformers_names(hf):
    out = {}
    for name, array in hf.items():
        if name.startswith("model.layers."):
            i, rest = name.split(".")[2], ".".join(name.split(".")[3:])
            out[f"model.layers.{i}.{LAYER_NAMES[rest]}"] = array
        else:
            out[{"model.embed_tokens.weight": "model.tok_embeddings.embedding_weight",
                 "model.norm.weight": "model.norm_out.weight", "lm_head.weight": "lm_head.weight"}[name]] = array
    return out


@pytest.mark.parametrize("model_type,tied,shards", [("llama", False, 1), ("llama", True, 2), ("qwen2", False, 1)])
def test_round_trip_gives_identical_tensors(tmp_path, model_type, tied, shards):
    config = hf_config(model_type, tied)
    weights = hf_weights(config)
    src = write_hf(str(tmp_path / "hf"), config, weights, shards=shards)
    model = convert(src, str(tmp_path / "mt"))

    md = read_model_dir(model)
    spec = md.spec
    assert (spec.num_heads, spec.num_kv_heads, spec.rope_theta, spec.rms_norm_eps) == (8, 2, 50000.0, 1e-6)
    assert spec.tie_word_embeddings == tied and spec.qkv_bias == (model_type == "qwen2")
    stored = md.weights()
    expected = mindformers_names(weights)
    assert sorted(stored) == sorted(expected)
    assert all(np.array_equal(stored[n], expected[n]) for n in expected)
    # the declared pad (<|im_end|>, also EOS and in the chat template) is replaced by a safe special token
    meta = json.load(open(os.path.join(model, "tokenizer_meta.json")))
    assert meta["pad_token"] == "<|endoftext|>" and spec.pad_token_id == 0
    assert (spec.bos_token_id, spec.eos_token_id) == (1, 2) and meta["chat_template"] == CHAT

    out = export_hf(model, str(tmp_path / "back"))
    back = load_file(os.path.join(out, "model.safetensors"))
    assert sorted(back) == sorted(weights)
    assert all(np.array_equal(back[n], weights[n]) for n in weights)


def test_export_loads_in_transformers(tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    from mindtune.data.tokenizer import load_tokenizer

    config = hf_config("llama", tied=True)
    model = convert(write_hf(str(tmp_path / "hf"), config, hf_weights(config)), str(tmp_path / "mt"))
    out = export_hf(model, str(tmp_path / "back"))
    loaded = AutoConfig.from_pretrained(out)
    assert loaded.model_type == "llama" and loaded.architectures == ["LlamaForCausalLM"]
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "rope_theta",
                "rms_norm_eps", "tie_word_embeddings", "vocab_size", "intermediate_size"):
        assert getattr(loaded, key) == config[key], key
    hf_tok = AutoTokenizer.from_pretrained(out)
    ours = load_tokenizer(model)
    text = "Hello world, 42 is the answer!"
    assert hf_tok.encode(text, add_special_tokens=False) == ours.encode(text)
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert hf_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == \
        ours.apply_chat_template(messages, add_generation_prompt=True)
    assert hf_tok.pad_token == "<|endoftext|>"


def test_bfloat16_checkpoint(tmp_path):
    config = hf_config()
    weights = hf_weights(config)
    model = convert(write_hf(str(tmp_path / "hf"), config, weights, bf16=True), str(tmp_path / "mt"))
    stored = read_model_dir(model).weights()
    q = "model.layers.1.self_attn.q_proj.weight"
    truncated = (weights[q].view(np.uint32) & 0xFFFF0000).view(np.float32)
    assert np.array_equal(stored["model.layers.1.attention.wq.weight"], truncated)


@pytest.mark.parametrize("damage,needle", [
    ("shape", "'model.layers.1.self_attn.q_proj.weight' has shape (64, 60)"),
    ("missing", "missing tensor 'model.norm.weight'"),
    ("unknown", "'model.layers.0.self_attn.rotary_scale'"),
    ("config", "model_type 'gpt2'"),
])
def test_errors_name_the_tensor(tmp_path, capsys, damage, needle):
    config = hf_config()
    weights = hf_weights(config)
    if damage == "shape":
        weights["model.layers.1.self_attn.q_proj.weight"] = weights["model.layers.1.self_attn.q_proj.weight"][:, :60]
    elif damage == "missing":
        del weights["model.norm.weight"]
    elif damage == "unknown":
        weights["model.layers.0.self_attn.rotary_scale"] = np.ones(4, np.float32)
    else:
        config["model_type"] = "gpt2"
    src = write_hf(str(tmp_path / "hf"), config, weights)
    with pytest.raises(CheckpointError, match=None) as info:
        convert(src, str(tmp_path / "mt"))
    assert needle in str(info.value)
    assert main(["convert", src, str(tmp_path / "mt")]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err
    assert not os.path.exists(tmp_path / "mt")
