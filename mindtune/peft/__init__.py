"""Parameter-efficient fine-tuning: one module per method, chosen by `peft.method`.

Every method turns the base `CausalLM` into an `Adapted` network with the same call interface
(`logits, hidden = network(input_ids)`), names the parameters the optimizer trains, and says which of them
form the adapter checkpoint. Stages never look inside a method.
"""
import importlib
from dataclasses import dataclass, field
from typing import Callable, List, Optional

from mindtune.errors import ConfigError

# peft.method -> module under mindtune.peft defining `apply(lm, cfg, spec) -> Adapted`
METHODS = {
    "none": "full",
    "lora": "lora",
}


@dataclass
class Adapted:
    """A network ready for training.

    network: called as `logits, hidden = network(input_ids)`; logits cover exactly the input positions.
    trainable: the parameters the optimizer updates (everything else is frozen).
    adapter_names: names of the tensors an adapter checkpoint holds; None means the whole model is trained
        and saved (full fine-tuning).
    merged_weights: for methods that fold into the base (LoRA), returns the full weights with the adapter merged.
    extra_positions: virtual tokens the method prepends (prompt tuning, P-tuning); the backbone is built for
        `max_length + extra_positions`.
    """
    network: object
    trainable: list
    adapter_names: Optional[List[str]] = None
    merged_weights: Optional[Callable[[], dict]] = None
    extra_positions: int = 0
    info: dict = field(default_factory=dict)


def extra_positions(cfg) -> int:
    """Positions a method adds in front of the sequence, known before the backbone is built."""
    module = _module(cfg.method)
    return getattr(module, "extra_positions", lambda c: 0)(cfg)


def apply_peft(lm, cfg, spec) -> Adapted:
    """Adapt `lm` (a CausalLM) by `cfg` (a PeftConfig) and freeze what the method does not train."""
    adapted = _module(cfg.method).apply(lm, cfg, spec)
    trainable = {id(p) for p in adapted.trainable}
    for param in lm.get_parameters():
        param.requires_grad = id(param) in trainable
    for param in adapted.network.get_parameters():
        param.requires_grad = id(param) in trainable
    return adapted


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
