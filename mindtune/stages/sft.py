"""Supervised fine-tuning (InstructGPT step 1): full or parameter-efficient, loss on response tokens."""
import numpy as np

from mindtune.data.formats import sft_messages
from mindtune.data.loading import stage_sets
from mindtune.engine.buckets import bucket_lengths, trim_batch
from mindtune.engine.losses import CausalLMLoss
from mindtune.engine.trainer import Trainer, TrainTask
from mindtune.eval.training import build_evaluator, check_training_eval
from mindtune.peft import count_parameters
from mindtune.stages.common import (build_adapted, check_inputs, mixture_log_row, prepare_run, print_summary,
                                    run_fingerprint, save_final)


def run(config) -> dict:
    checked = check_inputs(config)
    cfg, resolved = config, checked[1]
    tok, pad = resolved.tokenizer, resolved.spec.pad_token_id
    train, eval_set = stage_sets(cfg, tok, pad)   # tokenized once into the cache, read memory-mapped
    eval_rows = check_training_eval(cfg)   # train.eval_metrics: task metrics on generations
    run = prepare_run(config, checked)
    lm, adapted = build_adapted(run)
    trainable, total = count_parameters(adapted)
    if run.rank == 0:
        print(f"sft: {len(train)} training rows ({train.dropped} dropped as too long), peft={cfg.peft.method}, "
              f"trainable parameters {trainable:,} / {total:,} ({100 * trainable / total:.3f}%)", flush=True)
    evaluator = build_evaluator(eval_rows, cfg, resolved, adapted, run.profile) if eval_rows else None
    if evaluator is not None and run.rank == 0:
        start = evaluator()
        print("task metrics at the start: " + ", ".join(f"{k[5:]} {v:.3f}" for k, v in start.items()), flush=True)

    sampler = run.sampler(train)
    buckets = bucket_lengths(cfg.data.max_length, cfg.train.length_buckets)

    def train_batch(k):
        return trim_batch(train.batch(sampler.indices(k)), pad, buckets)

    def eval_batches():
        b = cfg.train.batch_size
        for i in range(0, len(eval_set), b):
            xs, ys = eval_set.batch(np.arange(i, min(i + b, len(eval_set))))
            yield trim_batch((_pad_batch(xs, b, pad), _pad_batch(ys, b, -100)), pad, buckets)

    task = TrainTask(loss_cell=CausalLMLoss(adapted.network), aux_names=("label_tokens",),
                     trainable=adapted.trainable, train_batch=train_batch,
                     eval_batches=eval_batches if eval_set is not None else None,
                     tokens_in=lambda batch: int((batch[0] != pad).sum()),
                     loss_tokens=lambda batch: int((batch[1] != -100).sum()),
                     eval_extra=evaluator, log_row=mixture_log_row(cfg, sampler, train),
                     fingerprint=run_fingerprint(cfg))
    summary = Trainer(cfg, run.run_dir, task, run.profile, desc="sft", run=run).fit()
    if run.rank == 0:
        save_final(run, adapted)
    if evaluator is not None and evaluator.first is not None:
        summary["eval_at_start"] = evaluator.first["scores"]
    print_summary(run, summary, extra=evaluator.report() if evaluator is not None else "")
    return summary


def check_rows(rows):
    """Row-format check for `mindtune validate`: every row must be an SFT row (raises with file:line)."""
    for where, row in rows:
        sft_messages(row, where)


def _pad_batch(rows, batch_size, fill):
    """Pad the last eval batch with filler rows (whose labels are all ignored) to the compiled batch size."""
    if len(rows) == batch_size:
        return rows
    filler = np.full((batch_size - len(rows),) + rows.shape[1:], fill, rows.dtype)
    return np.concatenate([rows, filler])
