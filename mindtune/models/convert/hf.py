"""Hugging Face Llama-family directories (config.json + *.safetensors + tokenizer files) <-> mindtune.

Reading handles sharded checkpoints (model.safetensors.index.json) and bfloat16 tensors; writing produces
config.json, generation_config.json, model.safetensors and the tokenizer files transformers loads.
"""
import json
import os
import shutil

import numpy as np

from mindtune.errors import CheckpointError
from mindtune.models.convert.names import check_weights, hf_to_mindtune, mindtune_to_hf
from mindtune.models.convert.tokenizer import choose_pad_token
from mindtune.models.spec import ModelSpec

ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}
SKIPPED = ("rotary_emb.inv_freq",)
_FLOATS = {"F16": np.float16, "F32": np.float32, "F64": np.float64}  # buffers some old checkpoints saved; recomputed from rope_theta


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None


def spec_from_config(config: dict, where: str, max_position: int = 0) -> ModelSpec:
    model_type = config.get("model_type")
    if model_type not in ARCHITECTURES:
        raise CheckpointError(f"{where}: model_type {model_type!r} is not supported "
                              f"(known: {', '.join(ARCHITECTURES)})")
    for key in ("rope_scaling", "mlp_bias"):
        if config.get(key):
            raise CheckpointError(f"{where}: {key}={config[key]!r} is not supported")
    if model_type != "qwen2" and config.get("attention_bias"):
        raise CheckpointError(f"{where}: attention_bias=true (biases on the output projection too) is not supported")
    if model_type == "mistral" and config.get("sliding_window"):
        if config["sliding_window"] < config.get("max_position_embeddings", 0):
            raise CheckpointError(f"{where}: sliding-window attention is not supported")

    def need(key):
        if key not in config:
            raise CheckpointError(f"{where}: key {key!r} is missing")
        return config[key]

    heads = int(need("num_attention_heads"))
    spec = ModelSpec(
        vocab_size=int(need("vocab_size")), hidden_size=int(need("hidden_size")),
        num_layers=int(need("num_hidden_layers")), num_heads=heads,
        num_kv_heads=int(config.get("num_key_value_heads") or heads),
        intermediate_size=int(need("intermediate_size")), rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        rope_theta=float(config.get("rope_theta", 10000.0)),
        max_position=max_position or int(config.get("max_position_embeddings", 4096)),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)), qkv_bias=model_type == "qwen2")
    head_dim = config.get("head_dim")
    if head_dim is not None and int(head_dim) != spec.head_dim:
        raise CheckpointError(f"{where}: head_dim {head_dim} differs from hidden_size/num_attention_heads "
                              f"({spec.head_dim}); not supported")
    return spec


def _load_safetensors(path: str) -> dict:
    """numpy float32-compatible arrays; bfloat16 (which numpy lacks) is widened from its raw bytes, which
    `safetensors.deserialize` hands over together with dtype and shape."""
    from safetensors import SafetensorError, deserialize, safe_open

    try:
        with safe_open(path, framework="np") as f:
            if all(f.get_slice(n).get_dtype() != "BF16" for n in f.keys()):
                return {n: f.get_tensor(n) for n in f.keys()}
        with open(path, "rb") as f:
            raw = deserialize(f.read())
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: unreadable safetensors file ({exc})") from None
    out = {}
    for name, info in raw:
        data, dtype = bytes(info["data"]), info["dtype"].upper()
        if dtype == "BF16":   # the upper half of a float32
            array = (np.frombuffer(data, np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif dtype in _FLOATS:
            array = np.frombuffer(data, _FLOATS[dtype])
        else:
            raise CheckpointError(f"{path}: tensor {name!r} has dtype {dtype}, not a floating-point weight")
        out[name] = array.reshape(info["shape"])
    return out


def read_hf_dir(path: str, max_position: int = 0):
    """Returns (spec, weights by MindFormers name, tokenizer file path, tokenizer_meta dict)."""
    if not os.path.isdir(path):
        raise CheckpointError(f"Hugging Face model directory not found: {path}")
    config_path = os.path.join(path, "config.json")
    config = _read_json(config_path)
    spec = spec_from_config(config, config_path, max_position)

    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(index):
        files = sorted(set(_read_json(index).get("weight_map", {}).values()))
    else:
        files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    if not files:
        raise CheckpointError(f"{path}: no *.safetensors weights (PyTorch .bin checkpoints are not supported)")
    weights, source = {}, {}
    for file in files:
        for hf_name, array in _load_safetensors(os.path.join(path, file)).items():
            if hf_name.endswith(SKIPPED):
                continue
            name = hf_to_mindtune(hf_name)
            if name is None:
                raise CheckpointError(f"{os.path.join(path, file)}: tensor {hf_name!r} is not a Llama weight "
                                      "mindtune knows")
            if name == "lm_head.weight" and spec.tie_word_embeddings:
                continue  # some tied checkpoints also store the shared matrix under lm_head
            weights[name] = np.asarray(array, np.float32)
            source[name] = hf_name
    check_weights(spec, weights, path, to_source=lambda n: source.get(n) or mindtune_to_hf(n) or n)

    tok_file, meta = _read_tokenizer(path, config)
    ids = _token_ids(tok_file, meta)
    spec = ModelSpec.from_dict({**spec.to_dict(), **{k: v for k, v in ids.items() if v is not None}}, where=path)
    return spec, weights, tok_file, meta


def _special(value):
    return value.get("content") if isinstance(value, dict) else value


def _read_tokenizer(path, config):
    tok_file = None
    for name in ("tokenizer.json", "tokenizer.model"):
        if os.path.isfile(os.path.join(path, name)):
            tok_file = os.path.join(path, name)
            break
    if tok_file is None:
        raise CheckpointError(f"{path}: no tokenizer.json or tokenizer.model")
    tc_path = os.path.join(path, "tokenizer_config.json")
    tc = _read_json(tc_path) if os.path.isfile(tc_path) else {}
    template = tc.get("chat_template")
    if isinstance(template, list):  # named templates: take the default one
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    jinja = os.path.join(path, "chat_template.jinja")
    if template is None and os.path.isfile(jinja):
        with open(jinja, encoding="utf-8") as f:
            template = f.read()
    bos, eos = _special(tc.get("bos_token")), _special(tc.get("eos_token"))
    backend = _load_backend(tok_file)
    if eos is None and config.get("eos_token_id") is not None:
        eos = backend.id_to_token(_first(config["eos_token_id"]))
    if bos is None and config.get("bos_token_id") is not None:
        bos = backend.id_to_token(_first(config["bos_token_id"]))
    specials = [_special(t) for t in (tc.get("unk_token"), *tc.get("additional_special_tokens", []))]
    specials += [v.get("content") for _, v in sorted(tc.get("added_tokens_decoder", {}).items(),
                                                       key=lambda kv: int(kv[0])) if v.get("special")]
    pad = choose_pad_token(_special(tc.get("pad_token")), [s for s in specials if s], bos, eos, template)
    add_bos = tc.get("add_bos_token")
    if add_bos is None:  # tokenizer.json files that insert BOS in their post-processor (Llama 3) say it there
        add_bos = bool(bos) and tok_file.endswith(".json") and _inserts_bos(backend, bos)
    return tok_file, {"bos_token": bos, "eos_token": eos, "pad_token": pad, "add_bos": bool(add_bos),
                      "chat_template": template}


def _first(value):
    return value[0] if isinstance(value, list) else value


def _load_backend(tok_file):
    if tok_file.endswith(".model"):
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=tok_file)
        sp.token_to_id, sp.id_to_token = sp.piece_to_id, sp.id_to_piece
        return sp
    from tokenizers import Tokenizer

    return Tokenizer.from_file(tok_file)


def _inserts_bos(backend, bos):
    ids = backend.encode("a", add_special_tokens=True).ids
    return bool(ids) and ids[0] == backend.token_to_id(bos)


def _token_ids(tok_file, meta):
    backend = _load_backend(tok_file)
    return {f"{k}_token_id": backend.token_to_id(meta[f"{k}_token"]) if meta.get(f"{k}_token") else None
            for k in ("bos", "eos", "pad")}


def write_hf_dir(path: str, spec: ModelSpec, weights: dict, tokenizer_dir: str = None):
    """Write a Hugging Face directory transformers loads: Llama (or Qwen2 for q/k/v biases)."""
    from safetensors.numpy import save_file

    model_type = "qwen2" if spec.qkv_bias else "llama"
    os.makedirs(path, exist_ok=True)
    config = {
        "architectures": [ARCHITECTURES[model_type]], "model_type": model_type,
        "vocab_size": spec.vocab_size, "hidden_size": spec.hidden_size, "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_layers, "num_attention_heads": spec.num_heads,
        "num_key_value_heads": spec.num_kv_heads, "head_dim": spec.head_dim, "hidden_act": "silu",
        "max_position_embeddings": spec.max_position, "rms_norm_eps": spec.rms_norm_eps,
        "rope_theta": spec.rope_theta, "rope_scaling": None, "tie_word_embeddings": spec.tie_word_embeddings,
        "bos_token_id": spec.bos_token_id, "eos_token_id": spec.eos_token_id, "pad_token_id": spec.pad_token_id,
        "torch_dtype": "float32",
    }
    if model_type == "llama":
        config.update(attention_bias=False, mlp_bias=False)
    with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(path, "generation_config.json"), "w", encoding="utf-8") as f:
        json.dump({"bos_token_id": spec.bos_token_id, "eos_token_id": spec.eos_token_id,
                   "pad_token_id": spec.pad_token_id}, f, indent=2)
    hf = {}
    for name, array in weights.items():
        hf_name = mindtune_to_hf(name)
        if hf_name is None:
            raise CheckpointError(f"tensor {name!r} has no Hugging Face name")
        hf[hf_name] = np.ascontiguousarray(array, np.float32)
    save_file(hf, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})  # transformers wants "pt"
    if tokenizer_dir:
        _write_tokenizer(path, tokenizer_dir)
    return path


def _write_tokenizer(path, tokenizer_dir):
    from mindtune.data.tokenizer import TOKENIZER_META

    meta_path = os.path.join(tokenizer_dir, TOKENIZER_META)
    meta = _read_json(meta_path) if os.path.isfile(meta_path) else {}
    config = {"bos_token": meta.get("bos_token"), "eos_token": meta.get("eos_token"),
              "pad_token": meta.get("pad_token"), "add_bos_token": bool(meta.get("add_bos")),
              "add_eos_token": False, "clean_up_tokenization_spaces": False, "model_max_length": 1 << 30}
    if meta.get("chat_template"):
        config["chat_template"] = meta["chat_template"]
    if os.path.isfile(os.path.join(tokenizer_dir, "tokenizer.json")):
        shutil.copy(os.path.join(tokenizer_dir, "tokenizer.json"), os.path.join(path, "tokenizer.json"))
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
    elif os.path.isfile(os.path.join(tokenizer_dir, "tokenizer.model")):
        shutil.copy(os.path.join(tokenizer_dir, "tokenizer.model"), os.path.join(path, "tokenizer.model"))
        config["tokenizer_class"] = "LlamaTokenizer"
    with open(os.path.join(path, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
