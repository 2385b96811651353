"""Find what `generate` needs from a user's path: a converted model, a run's `model/`, or the run directory."""
import os

from mindtune.errors import CheckpointError


def resolve_generation_model(path: str, seed: int = 0):
    """(resolved model, full weights dict). Adapter directories are merged into their base by the PEFT package's
    hook `mindtune.peft.generation_weights(resolved, seed) -> weights` when it provides one."""
    from mindtune.models.convert import find_model_dir
    from mindtune.models.loading import resolve_model

    if not os.path.exists(path):
        raise CheckpointError(f"--model: {path} not found")
    resolved = resolve_model(find_model_dir(path), key="--model")
    if resolved.model_dir is not None and resolved.model_dir.is_adapter:
        try:
            from mindtune.peft import generation_weights
        except ImportError:
            raise CheckpointError(f"{resolved.source}: an adapter directory; merge it into a full model first "
                                  "(mindtune merge-lora)") from None
        return resolved, generation_weights(resolved, seed)
    return resolved, resolved.base_weights(seed)
