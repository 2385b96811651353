"""The networks of the preference and RL stages (policy, reference, critic, reward model) over shared frozen bases.

A role is a base model, an optional adapter and an optional head. Roles whose bases are the same model share the
frozen base parameters: a later role's freshly built Llama gets the first role's Parameter objects in place of its
own (as MindFormers' LoraAdapter hands the original weight to the LoRA layer that replaces a Linear), so the
base is held once however many roles use it. A base that trains (full fine-tuning) is never shared.

    pool = BasePool(profile, seq_length, batch_size, seed)
    lm = pool.causal_lm(resolved)                 # frozen base of `resolved`, shared with earlier roles
    lm = pool.causal_lm(resolved, shared=False)   # a private copy (full fine-tuning trains it)
"""
from mindtune.errors import CheckpointError
from mindtune.models.build import build_llama, load_weights
from mindtune.models.causal_lm import CausalLM


def share_parameters(cell, params: dict, where: str):
    """Replace every parameter of `cell` by the Parameter of the same name in `params` (same shapes)."""
    replaced = 0
    for _, sub in cell.cells_and_names():
        for attr, param in list(sub._params.items()):  # attribute name -> Parameter (tied weights appear twice)
            shared = params.get(param.name)
            if shared is None:
                continue
            if tuple(shared.shape) != tuple(param.shape):
                raise CheckpointError(f"{where}: {param.name!r} has shape {tuple(param.shape)} here but "
                                      f"{tuple(shared.shape)} in the shared base")
            setattr(sub, attr, shared)
            replaced += 1
    return replaced


class BasePool:
    """Builds CausalLM networks, keeping one copy of each frozen base (keyed by its source and seed)."""

    def __init__(self, profile, seq_length: int, batch_size: int, seed: int, parallel=None):
        self.profile, self.seq_length, self.batch_size = profile, seq_length, batch_size
        self.seed, self.parallel = seed, parallel
        self.bases = {}          # key -> {parameter name: Parameter}
        self.copies = 0          # how many base copies this pool loaded (the memory that counts)

    @staticmethod
    def key(resolved, seed: int) -> tuple:
        """What identifies a base: the model it comes from (an adapter's base model) and, for presets, the seed."""
        model_dir = resolved.model_dir
        if model_dir is not None and model_dir.is_adapter:
            return ("adapter-base", model_dir.meta["base_model"], model_dir.meta.get("base_seed", seed),
                    resolved.spec)
        return ("model", resolved.source, seed if model_dir is None else None, resolved.spec)

    def causal_lm(self, resolved, shared: bool = True, seq_length: int = 0, batch_size: int = 0) -> CausalLM:
        llama = build_llama(resolved.spec, self.profile, seq_length or self.seq_length,
                            batch_size or self.batch_size, self.parallel)
        key = self.key(resolved, self.seed)
        if shared and key in self.bases:
            share_parameters(llama, self.bases[key], resolved.source)
        else:
            load_weights(llama, resolved.base_weights(self.seed), where=resolved.source)
            self.copies += 1
            if shared:
                self.bases[key] = {p.name: p for p in llama.get_parameters()}
        return CausalLM(llama)
