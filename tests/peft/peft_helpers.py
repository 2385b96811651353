"""Tiny-model helpers for the PEFT tests (imported as `helpers`)."""
import numpy as np

from mindtune.config.schema import ExperimentConfig, PeftConfig
from mindtune.models.spec import PRESETS

SPEC = PRESETS["tiny"]      # 2 layers, hidden 64, 4 heads / 2 kv heads, vocab 512, tied embeddings, pad 0
SEQ = 12
BATCH = 2


def base_weights(seed: int = 3) -> dict:
    from reference.tiny import lively_weights
    return lively_weights(SPEC, seed=seed)


def build_lm(weights: dict, cfg: PeftConfig = None, seq: int = SEQ, batch: int = BATCH, spec=SPEC):
    """A CausalLM with `weights`, built for `seq` real positions plus what the method prepends."""
    from mindtune import peft
    from mindtune.device import resolve_profile, setup_context
    from mindtune.models.build import build_llama, load_weights
    from mindtune.models.causal_lm import CausalLM

    profile = resolve_profile("cpu")
    setup_context(profile, graph_mode=True, seed=0)
    extra = peft.extra_positions(cfg) if cfg is not None else 0
    llama = build_llama(spec, profile, seq + extra, batch)
    load_weights(llama, weights)
    return CausalLM(llama)


def adapt(weights, cfg, seed=0, saved=None, **kw):
    from mindtune import peft
    lm = build_lm(weights, cfg, **kw)
    return lm, peft.apply_peft(lm, cfg, SPEC, seed=seed, saved=saved)


def batch(seed: int = 0, lengths=(SEQ, SEQ - 4), seq: int = SEQ):
    """(input_ids, labels) int32 [len(lengths), seq]: random non-pad tokens, right-padded, labels shifted."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((len(lengths), seq), np.int32)
    labels = np.full((len(lengths), seq), -100, np.int32)
    for b, n in enumerate(lengths):
        row = rng.integers(3, SPEC.vocab_size, n)
        ids[b, :n] = row
        labels[b, :n - 1] = row[1:]
    return ids, labels


def trainer(adapted, run_dir, data, steps: int, lr: float, save_every: int = 0, max_grad_norm: float = 0.0,
            compile_cache: bool = True):
    """The project's Trainer on a fixed batch (overfitting it), exactly as the SFT stage wires it."""
    from mindtune.device import resolve_profile
    from mindtune.engine.buckets import gather_labels
    from mindtune.engine.losses import CausalLMLoss
    from mindtune.engine.trainer import Trainer, TrainTask

    import os
    os.makedirs(run_dir, exist_ok=True)
    config = ExperimentConfig()
    config.train.max_steps, config.train.lr, config.train.save_every = steps, lr, save_every
    config.train.schedule, config.train.warmup_steps, config.train.max_grad_norm = "constant", 0, max_grad_norm
    config.train.compile_cache = compile_cache
    task = TrainTask(loss_cell=CausalLMLoss(adapted.network), aux_names=("label_tokens",),
                     trainable=adapted.trainable, train_batch=lambda k: gather_labels(data))
    return Trainer(config, run_dir, task, resolve_profile("cpu"), desc="test")


def loss_of(adapted, data) -> float:
    """The loss in inference mode; the compiled loss cell is kept on the Adapted (one compilation each)."""
    import mindspore as ms

    from mindtune.engine.buckets import gather_labels
    from mindtune.engine.losses import CausalLMLoss

    cell = adapted.info.setdefault("_test_loss_cell", CausalLMLoss(adapted.network))
    cell.set_train(False)
    loss, _ = cell(*(ms.Tensor(x) for x in gather_labels(data)))
    return float(loss.asnumpy())


def rel_err(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())
