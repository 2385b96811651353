"""Resolve `model.path` (preset name or model directory) into a spec, base weights and a tokenizer."""
import os
from dataclasses import dataclass, replace
from typing import Optional

from mindtune.data.tokenizer import Tokenizer, load_tokenizer
from mindtune.errors import ConfigError
from mindtune.models.build import build_llama, load_weights, random_weights
from mindtune.models.causal_lm import CausalLM
from mindtune.models.model_dir import ModelDir, is_model_dir, read_model_dir
from mindtune.models.spec import PRESETS, ModelSpec, get_preset

ASSETS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets")
TINY_TOKENIZER = os.path.join(ASSETS, "tiny_tokenizer")


@dataclass
class ResolvedModel:
    """What a stage needs to build its network: the architecture, where the weights come from, the tokenizer."""
    spec: ModelSpec
    source: str                      # preset name or absolute model directory
    model_dir: Optional[ModelDir]    # None for a random-initialised preset
    tokenizer: Optional[Tokenizer]

    def base_weights(self, seed: int) -> dict:
        """Full base weights: from the directory (following an adapter to its base), or seeded random."""
        if self.model_dir is None:
            return random_weights(self.spec, seed)
        if self.model_dir.is_adapter:
            base, base_seed = self.model_dir.meta["base_model"], self.model_dir.meta.get("base_seed", seed)
            if base in PRESETS:  # a preset base is redrawn with the adapter's own spec (its model.spec overrides)
                return random_weights(self.spec, base_seed)
            return resolve_model(base).base_weights(base_seed)
        return self.model_dir.weights()


def resolve_model(path: str, spec_overrides: Optional[dict] = None, tokenizer: Optional[str] = None,
                  chat_template: Optional[str] = None, key: str = "model.path") -> ResolvedModel:
    spec_overrides = spec_overrides or {}
    model_dir = None
    if path in PRESETS:
        spec = get_preset(path)
        tok_path = tokenizer or (TINY_TOKENIZER if path == "tiny" else None)
    elif is_model_dir(path):
        model_dir = read_model_dir(path)
        spec = model_dir.spec
        tok_path = tokenizer or model_dir.tokenizer_path
        if model_dir.is_adapter and tok_path is None:
            base = resolve_model(model_dir.meta["base_model"])
            tok_path = base.tokenizer.path if base.tokenizer else None
    elif os.path.exists(path):
        raise ConfigError(f"{key}: {path} is not a mindtune model directory; convert it with `mindtune convert`")
    else:
        raise ConfigError(f"{key}: {path!r} is neither a model directory nor a preset "
                          f"({', '.join(sorted(PRESETS))})")
    if spec_overrides:
        if model_dir is not None:
            raise ConfigError(f"model.spec: architecture overrides only apply to presets, not to {path}")
        try:
            spec = replace(spec, **spec_overrides).check()
        except TypeError as exc:
            raise ConfigError(f"model.spec: {exc}") from None
    if tokenizer is not None and not os.path.exists(tokenizer):
        raise ConfigError(f"model.tokenizer: tokenizer not found: {tokenizer}")
    tok = load_tokenizer(tok_path, chat_template) if tok_path else None
    if tok is not None and tok.vocab_size > spec.vocab_size:
        raise ConfigError(f"{key}: tokenizer has {tok.vocab_size} tokens but the model only {spec.vocab_size}")
    source = path if model_dir is None else model_dir.path
    return ResolvedModel(spec, source, model_dir, tok)


def build_causal_lm(resolved: ResolvedModel, profile, seq_length: int, seed: int, batch_size: int = 1,
                    parallel=None) -> CausalLM:
    """The MindFormers Llama for `resolved`, with its base weights loaded."""
    llama = build_llama(resolved.spec, profile, seq_length, batch_size, parallel, initialise=False)
    load_weights(llama, resolved.base_weights(seed), where=resolved.source)
    return CausalLM(llama)
