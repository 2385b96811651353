"""Supervised fine-tuning (InstructGPT step 1): full or parameter-efficient, loss on response tokens."""
import numpy as np

from mindtune.data.formats import sft_messages
from mindtune.data.loading import is_lead_process, stage_sets
from mindtune.data.packing import PackedSFTSet
from mindtune.data.sets import SFTSet
from mindtune.engine.buckets import bucket_of, gather_labels, plan_label_budgets, plan_lengths, trim_batch
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
    rows = train
    if cfg.data.packing:
        train, eval_set = packed(cfg, train), packed(cfg, eval_set) if eval_set is not None else None
    eval_rows = check_training_eval(cfg)   # train.eval_metrics: task metrics on generations
    run = prepare_run(config, checked)
    lm, adapted = build_adapted(run)
    trainable, total = count_parameters(adapted)
    if run.rank == 0:
        print(f"sft: {len(rows)} training rows ({rows.dropped} dropped as too long), peft={cfg.peft.method}, "
              f"trainable parameters {trainable:,} / {total:,} ({100 * trainable / total:.3f}%)", flush=True)
    evaluator = build_evaluator(eval_rows, cfg, resolved, adapted, run.profile) if eval_rows else None
    if evaluator is not None and run.rank == 0:
        start = evaluator()
        print("task metrics at the start: " + ", ".join(f"{k[5:]} {v:.3f}" for k, v in start.items()), flush=True)

    sampler = run.sampler(train)
    buckets, budgets = planned_shapes(cfg, train, eval_set, sampler)
    if run.rank == 0 and len(buckets) > 1:
        print(f"sft: batches run at {', '.join(map(str, buckets[:-1]))} tokens (train.length_buckets="
              f"{cfg.train.length_buckets}, planned from the run's batches; {buckets[-1]} for any other)", flush=True)
    if run.rank == 0 and budgets:
        print("sft: the loss reads the logits of at most " + ", ".join(
            f"{budgets[n]} of {cfg.train.batch_size * n}" for n in sorted(budgets)) +
            " positions a batch (those with a label)", flush=True)

    def shaped(batch):
        return gather_labels(trim_batch(batch, pad, buckets), budgets)

    def train_batch(k):
        return shaped(train.batch(sampler.indices(k)))

    def eval_batches():
        b = cfg.train.batch_size
        for i in range(0, len(eval_set), b):
            arrays = eval_set.batch(np.arange(i, min(i + b, len(eval_set))))
            # filler rows: pad ids, no labels (and, packed, no row)
            yield shaped(tuple(_pad_batch(x, b, fill) for x, fill in zip(arrays, (pad, -100, 0, 0))))

    task = TrainTask(loss_cell=CausalLMLoss(adapted.network), aux_names=("label_tokens",),
                     trainable=adapted.trainable, train_batch=train_batch,
                     eval_batches=eval_batches if eval_set is not None else None,
                     tokens_in=lambda batch: int((batch[0] != pad).sum()),
                     loss_tokens=lambda batch: int((batch[2] != -100).sum()),
                     eval_extra=evaluator, log_row=mixture_log_row(cfg, sampler, train),
                     fingerprint=run_fingerprint(cfg))
    summary = Trainer(cfg, run.run_dir, task, run.profile, desc="sft", run=run).fit()
    if run.rank == 0:
        save_final(run, adapted)
    if evaluator is not None and evaluator.first is not None:
        summary["eval_at_start"] = evaluator.first["scores"]
    print_summary(run, summary, extra=evaluator.report() if evaluator is not None else "")
    return summary


def packed(cfg, rows: SFTSet) -> PackedSFTSet:
    """`rows` packed into sequences of data.max_length tokens, with a line saying how full they are."""
    packs = PackedSFTSet(rows, cfg.data.max_length)
    if is_lead_process():
        print(f"sft: packed {len(rows)} rows into {len(packs)} sequences of {cfg.data.max_length} tokens "
              f"({100 * packs.fill:.1f}% of positions hold a token)", flush=True)
    return packs


PLANNED_BATCHES = 20_000   # the shape plan reads the lengths and label counts of at most this many micro-batches


def planned_shapes(cfg, train, eval_set, sampler):
    """The run's bucket lengths and, per length, its label budget (mindtune.engine.buckets), planned from the
    batches it will train and evaluate on. Packed sequences are nearly full: they all run at data.max_length,
    one compiled length."""
    count = min(cfg.train.max_steps * cfg.train.grad_accum * sampler.world, PLANNED_BATCHES)
    batches = [(train.lengths[idx].max(), train.label_counts[idx].sum()) for idx in sampler.first_batches(count)]
    if eval_set is not None:
        b = cfg.train.batch_size
        batches += [(eval_set.lengths[i:i + b].max(), eval_set.label_counts[i:i + b].sum())
                    for i in range(0, len(eval_set), b)]
    longest, labels = zip(*batches) if batches else ((), ())
    if cfg.train.length_buckets == 1 or cfg.data.packing:
        buckets = [cfg.data.max_length]
    else:
        buckets = plan_lengths(longest, cfg.train.length_buckets, cfg.data.max_length)
    budgets = plan_label_budgets([bucket_of(n, buckets) for n in longest], labels, cfg.train.batch_size)
    return buckets, budgets


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
