"""Parameter-efficient fine-tuning: one module per method, chosen by `peft.method`.

Every method turns the base `CausalLM` into an `Adapted` network with the same call interface
(`logits, hidden = network(input_ids)`), names the parameters the optimizer trains, and says which tensors
form the adapter checkpoint. Stages never look inside a method.

A method module defines `apply(lm, cfg, spec, *, tokenizer=None, seed=0, saved=None, where="adapter") -> Adapted`
(`saved`: the tensors of a saved adapter directory to load) and optionally `extra_positions(cfg) -> int`.
"""
import importlib
from dataclasses import dataclass, field
from typing import Callable, List, Optional

from mindtune.errors import CheckpointError, ConfigError

# peft.method -> module under mindtune.peft defining `apply`
METHODS = {
    "none": "full",
    "lora": "lora",
    "prefix": "prefix",
    "ptuning": "ptuning",
    "ptuning_v2": "ptuning_v2",
    "prompt": "prompt",
    "adapter": "adapter",
    "bitfit": "bitfit",
}


@dataclass
class Adapted:
    """A network ready for training.

    network: called as `logits, hidden = network(input_ids)`; logits cover exactly the input positions.
    trainable: the parameters the optimizer updates (everything else is frozen).
    adapter_names: names of the trained tensors an adapter checkpoint is made of; None means the whole model is
        trained and saved (full fine-tuning).
    merged_weights: for methods that fold into the base (LoRA), returns the full weights with the adapter merged.
    extra_positions: virtual tokens the method prepends (prompt tuning, P-tuning); the backbone is built for
        `max_length + extra_positions`.
    export: returns the tensors the adapter directory holds when they differ from the trained ones (prefix
        tuning saves the prefixes its MLP computes, not the MLP); None = the `adapter_names` parameters.
    """
    network: object
    trainable: list
    adapter_names: Optional[List[str]] = None
    merged_weights: Optional[Callable[[], dict]] = None
    extra_positions: int = 0
    info: dict = field(default_factory=dict)
    export: Optional[Callable[[], dict]] = None


def extra_positions(cfg) -> int:
    """Positions a method adds in front of the sequence, known before the backbone is built."""
    module = _module(cfg.method)
    return getattr(module, "extra_positions", lambda c: 0)(cfg)


def check(cfg):
    """What can be checked in a PeftConfig without a model (for `mindtune validate`); raises ConfigError."""
    _module(cfg.method)
    if cfg.method == "prompt" and cfg.prompt_init == "text" and not cfg.prompt_init_text:
        raise ConfigError("peft.prompt_init_text: required when peft.prompt_init is text")


def apply_peft(lm, cfg, spec, *, tokenizer=None, seed: int = 0, saved: Optional[dict] = None,
               where: str = "adapter") -> Adapted:
    """Adapt `lm` (a CausalLM) by `cfg` (a PeftConfig) and freeze what the method does not train.

    tokenizer: the model tokenizer (prompt tuning initialised from a text). seed: for new tensors drawn with
    numpy. saved: tensors of a saved adapter directory (`where`) to load onto the adapted model.
    Apply before `lm` is first called: methods change cells in place, and MindSpore keeps a called cell's graph.
    """
    from mindtune.models import lean_dense

    adapted = _module(cfg.method).apply(lm, cfg, spec, tokenizer=tokenizer, seed=seed, saved=saved, where=where)
    lean_dense.simplify(adapted.network)    # after the method: it may give a projection a bias (bitfit)
    trainable = {id(p) for p in adapted.trainable}
    for param in lm.get_parameters():
        param.requires_grad = id(param) in trainable
    for param in adapted.network.get_parameters():
        param.requires_grad = id(param) in trainable
    return adapted


def adapter_weights(adapted: Adapted) -> dict:
    """The tensors of the adapter directory (numpy, by name)."""
    from mindtune.models.build import get_weights

    if adapted.export is not None:
        return adapted.export()
    return get_weights(adapted.network, names=set(adapted.adapter_names))


def load_saved(network, saved: Optional[dict], names, where: str):
    """Load a saved adapter's tensors into `network`, requiring every adapter tensor `names` to be present."""
    from mindtune.models.build import load_weights

    if saved is None:
        return
    missing = sorted(set(names) - set(saved))
    if missing:
        raise CheckpointError(f"{where}: adapter lacks tensor(s) {', '.join(missing[:3])}"
                              + (f" and {len(missing) - 3} more" if len(missing) > 3 else ""))
    load_weights(network, saved, strict=False, where=where)


def _module(method: str):
    if method not in METHODS:
        raise ConfigError(f"peft.method: {method!r} is not implemented; available: {', '.join(METHODS)}")
    return importlib.import_module(f"mindtune.peft.{METHODS[method]}")


def count_parameters(adapted: Adapted) -> tuple:
    """(trainable, total) parameter counts, each shared tensor counted once."""
    seen, total = set(), 0
    for param in adapted.network.get_parameters():
        if id(param) not in seen:
            seen.add(id(param))
            total += param.size
    trainable = sum(p.size for p in {id(p): p for p in adapted.trainable}.values())
    return trainable, total


# inference side (generate, merge-lora): re-exported so callers need one import
from mindtune.peft.inference import generation_weights, inference_weights, merged_model  # noqa: E402,F401
