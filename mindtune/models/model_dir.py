"""The mindtune model directory: what `convert` writes and `train`, `generate` and `score` read.

    DIR/mindtune_model.json   {"format": "mindtune-model", "spec": {...}, ...extra}
    DIR/model.safetensors     weights by MindFormers parameter name, float32
    DIR/tokenizer.json | tokenizer.model, DIR/tokenizer_meta.json (special tokens, chat template)

An adapter directory (a PEFT run's `model/`) has {"format": "mindtune-adapter", "base_model": ..., "peft": ...}
and `adapter.safetensors` holding only the trained tensors. Directories are written to a temporary sibling and
renamed into place, so a crash never leaves a half-written model under the final name.
"""
import json
import os
import shutil
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from mindtune.errors import CheckpointError
from mindtune.models.spec import ModelSpec

META = "mindtune_model.json"
WEIGHTS = "model.safetensors"
ADAPTER_WEIGHTS = "adapter.safetensors"


@dataclass
class ModelDir:
    path: str
    spec: ModelSpec
    meta: dict = field(default_factory=dict)

    @property
    def is_adapter(self) -> bool:
        return self.meta.get("format") == "mindtune-adapter"

    @property
    def tokenizer_path(self) -> Optional[str]:
        for name in ("tokenizer.json", "tokenizer.model"):
            if os.path.isfile(os.path.join(self.path, name)):
                return self.path
        return None

    def weights(self) -> dict:
        return read_safetensors(os.path.join(self.path, ADAPTER_WEIGHTS if self.is_adapter else WEIGHTS))

    def verify(self):
        """Read the weights file's header (not its tensors): a broken file is reported before a run starts."""
        verify_safetensors(os.path.join(self.path, ADAPTER_WEIGHTS if self.is_adapter else WEIGHTS))


def is_model_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, META))


def read_model_dir(path: str) -> ModelDir:
    meta_path = os.path.join(path, META)
    if not os.path.isdir(path):
        raise CheckpointError(f"model directory not found: {path}")
    if not os.path.isfile(meta_path):
        raise CheckpointError(f"{path}: not a mindtune model directory (no {META}); "
                              "convert a Hugging Face or GGUF model with `mindtune convert` first")
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{meta_path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    if meta.get("format") not in ("mindtune-model", "mindtune-adapter"):
        raise CheckpointError(f"{meta_path}: unknown format {meta.get('format')!r}")
    spec = ModelSpec.from_dict(meta.get("spec", {}), where=meta_path)
    return ModelDir(os.path.abspath(path), spec, meta)


def read_safetensors(path: str) -> dict:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    if not os.path.isfile(path):
        raise CheckpointError(f"weights file not found: {path}")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable safetensors file ({exc})") from None


def verify_safetensors(path: str):
    from safetensors import SafetensorError, safe_open

    if not os.path.isfile(path):
        raise CheckpointError(f"weights file not found: {path}")
    try:
        with safe_open(path, framework="np") as f:
            f.keys()
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable safetensors file ({exc})") from None


def write_model_dir(path: str, spec: ModelSpec, weights: dict, meta: Optional[dict] = None,
                    tokenizer_dir: Optional[str] = None, adapter: bool = False, tokenizer=None):
    """Write a model (or adapter) directory atomically: build it beside `path`, then rename over it.

    The tokenizer comes from `tokenizer_dir` (its files are copied) or from a loaded `tokenizer`.
    """
    from safetensors.numpy import save_file

    path = os.path.abspath(path)
    tmp = path + ".tmp-write"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    full_meta = {"format": "mindtune-adapter" if adapter else "mindtune-model", "spec": spec.to_dict(),
                 **(meta or {})}
    arrays = {k: np.ascontiguousarray(v) for k, v in weights.items()}
    save_file(arrays, os.path.join(tmp, ADAPTER_WEIGHTS if adapter else WEIGHTS))
    if tokenizer_dir:
        for name in ("tokenizer.json", "tokenizer.model", "tokenizer_meta.json"):
            src = os.path.join(tokenizer_dir, name)
            if os.path.isfile(src):
                shutil.copy(src, os.path.join(tmp, name))
    if tokenizer is not None:  # a loaded Tokenizer: its file, plus its (possibly overridden) special tokens
        from mindtune.data.tokenizer import save_tokenizer_meta
        name = "tokenizer.model" if tokenizer.kind == "sentencepiece" else "tokenizer.json"
        shutil.copy(tokenizer.path, os.path.join(tmp, name))
        save_tokenizer_meta(tmp, tokenizer)
    with open(os.path.join(tmp, META), "w", encoding="utf-8") as f:
        json.dump(full_meta, f, indent=1)
    old = path + ".tmp-old"  # the previous directory stays whole until the new one is in place
    shutil.rmtree(old, ignore_errors=True)
    if os.path.exists(path):
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    return path
