"""Checkpoint conversion: Hugging Face directories and GGUF files -> mindtune model directories, and back.

    convert(src, dst)       HF dir (config.json + safetensors + tokenizer) or .gguf file -> model dir
    export_hf(src, dst)     mindtune model dir (or a run's model) -> HF dir transformers loads
"""
import json
import os
import shutil
import tempfile

from mindtune.errors import CheckpointError


def convert(src: str, dst: str, max_position: int = 0) -> str:
    """Convert `src` into the mindtune model directory `dst` (written atomically). Returns dst."""
    from mindtune.data.tokenizer import TOKENIZER_META
    from mindtune.models.model_dir import write_model_dir

    staging = tempfile.mkdtemp(prefix="mindtune-convert-")
    try:
        if os.path.isfile(src) and src.endswith(".gguf"):
            from mindtune.models.convert.from_gguf import read_gguf

            spec, weights, tokenizer, meta = read_gguf(src, max_position)
            tokenizer.save(os.path.join(staging, "tokenizer.json"))
        elif os.path.isdir(src) and os.path.isfile(os.path.join(src, "config.json")):
            from mindtune.models.convert.hf import read_hf_dir

            spec, weights, tok_file, meta = read_hf_dir(src, max_position)
            shutil.copy(tok_file, os.path.join(staging, os.path.basename(tok_file)))
        elif os.path.exists(src):
            raise CheckpointError(f"{src}: neither a .gguf file nor a Hugging Face directory with config.json")
        else:
            raise CheckpointError(f"{src}: not found")
        with open(os.path.join(staging, TOKENIZER_META), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=1)
        return write_model_dir(dst, spec, weights, meta={"source": os.path.abspath(src)}, tokenizer_dir=staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def export_hf(src: str, dst: str) -> str:
    """Write the model directory `src` (a converted model, a full fine-tune's output, or a run directory
    holding `model/`) as a Hugging Face directory `dst`."""
    from mindtune.models.convert.hf import write_hf_dir
    from mindtune.models.model_dir import read_model_dir

    model_dir = read_model_dir(find_model_dir(src))
    if model_dir.is_adapter:
        raise CheckpointError(f"{model_dir.path}: an adapter, not a full model; merge it first (mindtune merge-lora)")
    return write_hf_dir(dst, model_dir.spec, model_dir.weights(), tokenizer_dir=model_dir.tokenizer_path)


def find_model_dir(path: str) -> str:
    """`path` itself if it is a model directory, else `path/model` (a training run's output)."""
    from mindtune.models.model_dir import is_model_dir

    if not is_model_dir(path) and is_model_dir(os.path.join(path, "model")):
        return os.path.join(path, "model")
    return path
