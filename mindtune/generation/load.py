"""Find what `generate` needs from a user's path: a converted model, a run's `model/`, the run directory, or an
adapter directory (a PEFT run's model/)."""
import os

from mindtune.errors import CheckpointError


def resolve_generation_model(path: str, seed: int = 0):
    """(resolved, spec, full weights, extras). Adapters go through the PEFT package's
    `mindtune.peft.inference.inference_weights`: LoRA/BitFit come back folded into the weights (BitFit may turn on
    qkv_bias in the spec), prompt/P-tuning as extras["soft_prompt"], prefix/P-tuning v2 as extras["prefix_kv"]
    — the Generator's `soft_prompt` and `prefix_kv` arguments."""
    from mindtune.models.convert import find_model_dir
    from mindtune.models.loading import resolve_model

    if not os.path.exists(path):
        raise CheckpointError(f"--model: {path} not found")
    resolved = resolve_model(find_model_dir(path), key="--model")
    if resolved.model_dir is not None and resolved.model_dir.is_adapter:
        from mindtune.peft.inference import inference_weights

        spec, weights, extras = inference_weights(path, seed)
        return resolved, spec, weights, extras
    return resolved, resolved.spec, resolved.base_weights(seed), {}
