"""peft.method: none — full fine-tuning: every parameter trains and the whole model is saved."""
from mindtune.peft import Adapted


def apply(lm, cfg, spec, **_) -> Adapted:
    return Adapted(network=lm, trainable=list(lm.trainable_params()))
