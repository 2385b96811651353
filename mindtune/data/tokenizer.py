"""Tokenizers (Hugging Face tokenizer.json or sentencepiece .model) and chat templates (Jinja, as in HF).

One `Tokenizer` class serves every stage: encode/decode, special ids, and `apply_chat_template`.
"""
import json
import os
from functools import lru_cache
from typing import List, Optional

from mindtune.errors import ConfigError


@lru_cache(maxsize=8)
def _compile_template(source: str):
    from jinja2 import TemplateError  # noqa: F401  (jinja2 is a dependency of transformers and of mindtune)
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise ValueError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(source)


class Tokenizer:
    """A text <-> ids codec with the special tokens a chat model needs.

    Built by `load_tokenizer`; `backend` is a `tokenizers.Tokenizer` or a `sentencepiece.SentencePieceProcessor`.
    """

    def __init__(self, backend, kind: str, bos_token: Optional[str], eos_token: Optional[str],
                 pad_token: Optional[str], chat_template: Optional[str], add_bos: bool = False, path: str = ""):
        self.backend = backend
        self.kind = kind
        self.path = path
        self.bos_token, self.eos_token, self.pad_token = bos_token, eos_token, pad_token
        self.chat_template = chat_template
        self.add_bos = add_bos
        self.bos_id = self.token_to_id(bos_token) if bos_token else None
        self.eos_id = self.token_to_id(eos_token) if eos_token else None
        self.pad_id = self.token_to_id(pad_token) if pad_token else None

    @property
    def vocab_size(self) -> int:
        if self.kind == "sentencepiece":
            return self.backend.get_piece_size()
        return self.backend.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int:
        if self.kind == "sentencepiece":
            idx = self.backend.piece_to_id(token)
            ok = idx != self.backend.unk_id() or token == self.backend.id_to_piece(idx)
        else:
            idx = self.backend.token_to_id(token)
            ok = idx is not None
        if not ok:
            raise ConfigError(f"tokenizer {self.path}: special token {token!r} is not in the vocabulary")
        return idx

    def encode(self, text: str) -> List[int]:
        """Ids of `text`; special tokens written in the text (e.g. <|im_start|>) map to their ids."""
        if self.kind == "sentencepiece":
            ids = self.backend.encode(text)
        else:
            ids = self.backend.encode(text, add_special_tokens=False).ids
        return ([self.bos_id] if self.add_bos and self.bos_id is not None else []) + list(ids)

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        ids = [int(i) for i in ids]
        if self.kind == "sentencepiece":
            return self.backend.decode(ids)
        return self.backend.decode(ids, skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages, add_generation_prompt: bool = False) -> str:
        """Render `messages` ([{role, content}]) with the model's Jinja chat template, as transformers does."""
        if not self.chat_template:
            raise ConfigError(f"tokenizer {self.path}: no chat template; set model.chat_template")
        template = _compile_template(self.chat_template)
        return template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                               bos_token=self.bos_token or "", eos_token=self.eos_token or "")


TOKENIZER_META = "tokenizer_meta.json"


def load_tokenizer(path: str, chat_template: Optional[str] = None) -> Tokenizer:
    """Load a tokenizer from a directory (tokenizer.json or tokenizer.model, plus tokenizer_meta.json for the
    special tokens and chat template) or from a tokenizer.json / .model file directly."""
    if not os.path.exists(path):
        raise ConfigError(f"tokenizer not found: {path}")
    directory, file = (path, None) if os.path.isdir(path) else (os.path.dirname(path), path)
    meta = {}
    meta_path = os.path.join(directory, TOKENIZER_META)
    if os.path.isfile(meta_path):
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    if file is None:
        for name in ("tokenizer.json", "tokenizer.model"):
            if os.path.isfile(os.path.join(directory, name)):
                file = os.path.join(directory, name)
                break
        else:
            raise ConfigError(f"{path}: no tokenizer.json or tokenizer.model in this directory")
    try:
        if file.endswith(".model"):
            import sentencepiece as spm
            backend, kind = spm.SentencePieceProcessor(model_file=file), "sentencepiece"
        else:
            from tokenizers import Tokenizer as HFTokenizer
            backend, kind = HFTokenizer.from_file(file), "tokenizer.json"
    except Exception as exc:  # the libraries raise RuntimeError/OSError with long messages
        raise ConfigError(f"{file}: not a readable tokenizer ({str(exc).splitlines()[0][:200]})") from None
    if kind == "sentencepiece":
        defaults = {"bos_token": backend.id_to_piece(backend.bos_id()) if backend.bos_id() >= 0 else None,
                    "eos_token": backend.id_to_piece(backend.eos_id()) if backend.eos_id() >= 0 else None,
                    "pad_token": backend.id_to_piece(backend.pad_id()) if backend.pad_id() >= 0 else None,
                    "add_bos": True}
    else:
        defaults = {"bos_token": None, "eos_token": None, "pad_token": None, "add_bos": False}
    settings = {**defaults, **{k: v for k, v in meta.items() if k in defaults}}
    return Tokenizer(backend, kind, settings["bos_token"], settings["eos_token"], settings["pad_token"],
                     chat_template or meta.get("chat_template"), add_bos=settings["add_bos"], path=file)


def save_tokenizer_meta(directory: str, tokenizer: Tokenizer):
    """Write the special tokens and chat template beside the tokenizer file."""
    meta = {"bos_token": tokenizer.bos_token, "eos_token": tokenizer.eos_token, "pad_token": tokenizer.pad_token,
            "add_bos": tokenizer.add_bos, "chat_template": tokenizer.chat_template}
    with open(os.path.join(directory, TOKENIZER_META), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)
