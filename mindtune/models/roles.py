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
from mindtune.models.heads import split_head_weights


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

    def __init__(self, profile, seq_length: int, batch_size: int, seed: int, parallel=None, share: bool = True):
        """share: false loads a copy of the base for every network (to measure what sharing saves)."""
        self.profile, self.seq_length, self.batch_size = profile, seq_length, batch_size
        self.seed, self.parallel, self.share = seed, parallel, share
        self.bases = {}          # key -> {parameter name: Parameter}
        self.copies = 0          # how many base copies this pool loaded (the memory that counts)

    @staticmethod
    def key(resolved, seed: int) -> tuple:
        """What identifies a base: the model directory it comes from (an adapter's base model), or for a preset
        (seeded random weights) its name and seed; and the architecture."""
        import os

        from mindtune.models.spec import PRESETS

        model_dir = resolved.model_dir
        base = resolved.source
        if model_dir is not None and model_dir.is_adapter:
            base, seed = model_dir.meta["base_model"], model_dir.meta.get("base_seed", seed)
        if base in PRESETS:
            return (base, seed, resolved.spec)
        return (os.path.abspath(base), None, resolved.spec)

    def causal_lm(self, resolved, shared: bool = True, seq_length: int = 0, batch_size: int = 0) -> CausalLM:
        llama = build_llama(resolved.spec, self.profile, seq_length or self.seq_length,
                            batch_size or self.batch_size, self.parallel, initialise=False)
        key = self.key(resolved, self.seed)
        shared = shared and self.share
        if shared and key in self.bases:
            share_parameters(llama, self.bases[key], resolved.source)
        else:
            # a reward model's directory also holds its score head, which is not part of the Llama
            weights, _ = split_head_weights(resolved.base_weights(self.seed))
            load_weights(llama, weights, where=resolved.source)
            self.copies += 1
            if shared:
                self.bases[key] = {p.name: p for p in llama.get_parameters()}
        return CausalLM(llama)


def _freeze(cell):
    for param in cell.get_parameters():
        param.requires_grad = False


def starting_adapter(resolved):
    """(PeftConfig, tensors) of an adapter directory the policy starts from, or (None, None) for a full model."""
    if resolved.model_dir is None or not resolved.model_dir.is_adapter:
        return None, None
    from mindtune.peft.inference import read_adapter

    return read_adapter(resolved)


def policy_and_reference(pool: BasePool, resolved, peft_cfg, tokenizer, seed: int, with_reference: bool = True):
    """(policy Adapted, reference CausalLM or None): the policy trains by `peft_cfg` (continuing the starting
    adapter if `resolved` is one); the reference is the starting model, frozen: the shared base plus a frozen copy
    of the starting adapter. Full fine-tuning trains a private copy of the base; the reference shares the pool's."""
    from mindtune import peft

    _, saved = starting_adapter(resolved)
    full = peft_cfg.method == "none"
    policy = peft.apply_peft(pool.causal_lm(resolved, shared=not full), peft_cfg, resolved.spec,
                             tokenizer=tokenizer, seed=seed, saved=saved, where=resolved.source)
    reference = None
    if with_reference:
        reference = pool.causal_lm(resolved)
        if saved is not None:
            reference = peft.apply_peft(reference, peft_cfg, resolved.spec, tokenizer=tokenizer, seed=seed,
                                        saved=saved, where=resolved.source).network
        _freeze(reference)
    return policy, reference


def reward_model_info(path: str, key: str):
    """(ResolvedModel, saved reward statistics) of a reward-model run or model directory; nothing is built."""
    import os

    from mindtune.models.convert import find_model_dir
    from mindtune.models.loading import resolve_model

    if not os.path.exists(path):
        raise CheckpointError(f"{key}: {path} not found")
    resolved = resolve_model(find_model_dir(path), key=key)
    stats = (resolved.model_dir.meta.get("reward_model") if resolved.model_dir else None) or {}
    missing = [k for k in ("reward_mean", "reward_std", "head") if k not in stats]
    if not stats or missing:
        raise CheckpointError(f"{key}: {resolved.source} is not a reward model with saved statistics "
                              f"(missing {', '.join(missing) or 'reward_model'}); train one with stage: rm")
    return resolved, stats


def scalar_model(pool: BasePool, resolved, stats: dict, trainable_peft=None, tokenizer=None, seed: int = 0,
                 head_name: str = None):
    """A reward model (frozen) or a critic initialised from one (trainable_peft given): network + ScoreHead.

    Returns (network, head, trainable parameters). A reward model saved as an adapter keeps its adapter (a
    trainable copy for a critic); a full reward model gets a new `trainable_peft` adapter for a critic, or is
    copied whole when trainable_peft.method is none.
    """
    from mindtune import peft
    from mindtune.models.heads import ScoreHead

    rm_peft, saved = starting_adapter(resolved)
    weights_head = None
    if saved is not None:
        saved, weights_head = split_head_weights(saved, stats["head"])
    else:
        _, weights_head = split_head_weights(resolved.model_dir.weights(), stats["head"])
    method = rm_peft if rm_peft is not None else trainable_peft
    full_copy = trainable_peft is not None and rm_peft is None and trainable_peft.method == "none"
    lm = pool.causal_lm(resolved, shared=not full_copy)
    network, trainable = lm, []
    if method is not None:
        adapted = peft.apply_peft(lm, method, resolved.spec, tokenizer=tokenizer, seed=seed, saved=saved,
                                  where=resolved.source)
        network, trainable = adapted.network, list(adapted.trainable)
    head = ScoreHead(resolved.spec.hidden_size, seed=seed, name=head_name or stats["head"])
    head.load({head.weight.name: weights_head[stats["head"] + ".weight"]}, resolved.source)
    if trainable_peft is None:
        _freeze(network)
        head.weight.requires_grad = False
        return network, head, []
    trainable.append(head.weight)
    return network, head, trainable


def disambiguate(cell, beside, prefix: str):
    """Rename the parameters of `cell` whose names a different Parameter of `beside` already has: two networks in
    one compiled graph need distinct parameter names (a shared base keeps its names: it is the same object)."""
    taken = {p.name: p for p in beside.get_parameters()}
    for param in cell.get_parameters():
        other = taken.get(param.name)
        if other is not None and other is not param:
            param.name = prefix + param.name
