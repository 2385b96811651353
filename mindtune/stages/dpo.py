"""Direct preference optimisation (stage dpo): DPO, IPO and SimPO on preference pairs, no reward model, no critic.

The policy starts from model.path (an SFT run's model: full or adapter). The reference is that same starting
model, frozen: with a PEFT method it shares the policy's frozen base parameters (the base is held once) plus, when
the start is an adapter, a frozen copy of that adapter; with full fine-tuning the policy trains a private copy and
the reference keeps the original. SimPO needs no reference. `dpo.precompute_reference` computes the reference
log-probabilities of every pair once, before training, into RUN_DIR/reference_logps.npz (reused on resume).

A micro-batch holds both sides of B pairs: rows 0..B-1 chosen, B..2B-1 rejected, with SFT-style labels on the
final response, so one forward gives every log-probability the loss needs. As in SFT, the labels go to the loss as
K flat positions and targets (`mindtune.engine.buckets.gather_labels`), K planned from the run's pair batches: the
output projection and the log-softmax run at the response tokens only, never at a prompt or padding position.
"""
import os

import numpy as np
from mindspore import nn, ops

from mindtune.atomic import atomic_write
from mindtune.data.loading import stage_sets
from mindtune.engine import compile_cache
from mindtune.engine.buckets import gather_labels, plan_label_budgets
from mindtune.engine.graph import CompiledFunction
from mindtune.engine.losses import IGNORE, row_label_log_probs
from mindtune.engine.trainer import Trainer, TrainTask
from mindtune.errors import ConfigError
from mindtune.models.causal_lm import output_projection
from mindtune.models.roles import BasePool
from mindtune.rlhf.losses import _weighted_mean, dpo_loss
from mindtune.stages.common import (check_inputs, mixture_log_row, prepare_run, print_summary, run_fingerprint,
                                    save_final)

# accuracy: the implicit reward of chosen above rejected's (0 at the start: policy == reference); logp_accuracy:
# the policy's own log-probability of chosen above rejected's (what the model itself prefers)
METRICS = ("reward_chosen", "reward_rejected", "reward_margin", "accuracy", "logp_chosen", "logp_rejected",
           "logp_accuracy", "sft_loss")
REFERENCE_FILE = "reference_logps.npz"


class DPOLoss(nn.Cell):
    """(input_ids [2B, L], label_at [K], label_ids [K], weight [B], ref_logps [2B]) -> (loss, METRICS).

    label_at, label_ids: the labelled positions of the 2B rows as flat indices (row * L + t) and their targets,
    padded with index 0 and IGNORE (`pair_batch`). The policy and the in-graph reference both project only those
    K positions. ref_logps are used when there is no reference network in the graph (precomputed, or simpo's
    zeros)."""

    def __init__(self, policy, reference, cfg):
        super().__init__(auto_prefix=False)   # keep the parameter names checkpoints and adapters use
        self.policy, self.reference, self.cfg = policy, reference, cfg
        self.policy_head = output_projection(policy)
        self.reference_head = output_projection(reference) if reference is not None else None
        self.average = cfg.loss in ("ipo", "simpo")

    def construct(self, input_ids, label_at, label_ids, weight, ref_logps):
        cfg = self.cfg
        b = weight.shape[0]
        logps, total, count = sequence_logps(self.policy, self.policy_head, input_ids, label_at, label_ids,
                                             self.average)
        if self.reference is not None:
            ref_logps = ops.stop_gradient(sequence_logps(self.reference, self.reference_head, input_ids, label_at,
                                                         label_ids, self.average)[0])
        loss, chosen, rejected = dpo_loss(logps[:b], logps[b:], ref_logps[:b], ref_logps[b:], cfg.loss, cfg.beta,
                                          cfg.label_smoothing, cfg.gamma, weight)
        sft = _weighted_mean(-total[:b] / ops.maximum(count[:b], 1.0), weight)   # per-token NLL of chosen
        if cfg.sft_coef:
            loss = loss + cfg.sft_coef * sft
        margin = chosen - rejected
        accuracy = _weighted_mean((margin > 0).astype(margin.dtype), weight)
        return loss, (_weighted_mean(chosen, weight), _weighted_mean(rejected, weight),
                      _weighted_mean(margin, weight), accuracy, _weighted_mean(logps[:b], weight),
                      _weighted_mean(logps[b:], weight),
                      _weighted_mean((logps[:b] > logps[b:]).astype(margin.dtype), weight), sft)


def sequence_logps(network, lm_head, input_ids, label_at, label_ids, average: bool):
    """(per-row log-probability [2B]: the sum, or the token mean when `average`; the sum [2B]; the label count
    [2B]) of one forward of `network`, projected at the gathered positions only."""
    _, hidden = network(input_ids)
    total, count = row_label_log_probs(hidden, lm_head, label_at, label_ids)
    return (total / ops.maximum(count, 1.0) if average else total), total, count


def pair_batch(data, idx, batch_size: int, pad_id: int, ref=None, budgets=None):
    """(ids [2B, L], label_at [K], label_ids [K], weight [B], ref_logps [2B]) for pairs `idx`, padded with
    zero-weight pairs; K is the budget planned for L (`budgets`, see `pair_label_budgets`), or 2B * L when there
    is none or the batch holds more labels."""
    n, fill = len(idx), batch_size - len(idx)
    ids = [data.chosen[idx], data.rejected[idx]]
    labels = [data.chosen_labels[idx], data.rejected_labels[idx]]
    refs = [ref[0][idx], ref[1][idx]] if ref is not None else [np.zeros(n, np.float32)] * 2
    if fill:
        width = data.chosen.shape[1]
        ids = [np.concatenate([x, np.full((fill, width), pad_id, np.int32)]) for x in ids]
        labels = [np.concatenate([x, np.full((fill, width), IGNORE, np.int32)]) for x in labels]
        refs = [np.concatenate([x, np.zeros(fill, np.float32)]) for x in refs]
    weight = np.concatenate([np.ones(n, np.float32), np.zeros(fill, np.float32)])
    return gather_labels((np.concatenate(ids), np.concatenate(labels), weight,
                          np.concatenate(refs).astype(np.float32)), budgets)


def pair_label_budgets(batches, batch_size: int) -> dict:
    """{L: K} for pair batches `batches`, (PreferenceSet, pair indices) each: the most labelled positions (both
    sides) any of them holds, rounded up to 16, at most 2B * L (`mindtune.engine.buckets.plan_label_budgets`)."""
    batches = list(batches)
    return plan_label_budgets([data.max_length for data, _ in batches],
                              [int(data.label_counts[np.asarray(idx)].sum()) for data, idx in batches], 2 * batch_size)


def sequential_batches(data, batch_size: int) -> list:
    """The pair indices of the batches an evaluation (or the reference pass) reads: `data` in order."""
    return [np.arange(i, min(i + batch_size, len(data))) for i in range(0, len(data), batch_size)]


def planned_budgets(cfg, train, held_out, sampler) -> dict:
    """The label budget of the run's loss, planned from the pair batches it will train and evaluate on (DPO
    batches all run at data.max_length, 2B rows)."""
    from mindtune.stages.sft import PLANNED_BATCHES

    count = min(cfg.train.max_steps * cfg.train.grad_accum * sampler.world, PLANNED_BATCHES)
    batches = [(train, idx) for idx in sampler.first_batches(count)]
    if held_out is not None:
        batches += [(held_out, idx) for idx in sequential_batches(held_out, sampler.batch)]
    return pair_label_budgets(batches, sampler.batch)


def check(config):
    """The DPO settings and every input, before anything is written (also run by `mindtune validate`):
    (config, checked inputs)."""
    check_config(config)
    return config, check_inputs(config)


def check_config(cfg):
    if cfg.dpo.loss == "ipo" and cfg.dpo.beta <= 0:
        raise ConfigError("dpo.beta: must be > 0 for the ipo loss (its target margin is 1 / (2 beta))")
    if cfg.dpo.reference is not None:
        raise ConfigError("dpo.reference: a reference other than the starting model is not supported yet; "
                          "leave it unset (the reference is model.path)")


def build_networks(run, batch_size: int):
    """(policy Adapted, frozen reference network or None for simpo, BasePool). See the module docstring."""
    from mindtune import peft
    from mindtune.models.roles import disambiguate, policy_and_reference

    cfg, resolved = run.config, run.resolved
    seq = cfg.data.max_length + peft.extra_positions(cfg.peft)
    pool = BasePool(run.profile, seq, batch_size, cfg.seed, cfg.parallel)
    policy, reference = policy_and_reference(pool, resolved, cfg.peft, resolved.tokenizer, cfg.seed,
                                             with_reference=cfg.dpo.loss != "simpo")
    if reference is not None:   # private copies (full fine-tuning, the starting adapter) meet the policy in one graph
        disambiguate(reference, policy.network, "reference.")
    return policy, reference, pool


class ReferenceLogps:
    """Reference log-probabilities of every pair of a set, computed in fixed-size compiled batches that project
    at most `budgets` labelled positions (`pair_label_budgets`; planned from the set being read when None)."""

    def __init__(self, reference, cfg, batch_size: int, pad_id: int, rank: int = 0, budgets: dict = None):
        import mindspore as ms

        self.ms, self.batch, self.pad, self.budgets = ms, batch_size, pad_id, budgets
        average = cfg.dpo.loss in ("ipo", "simpo")
        self.reference = reference
        head = output_projection(reference)

        def forward(input_ids, label_at, label_ids):
            return sequence_logps(reference, head, input_ids, label_at, label_ids, average)[0]

        self._forward = CompiledFunction(forward, [reference], cache=compile_cache.for_run(cfg, rank),
                                         label="dpo.reference_logps")

    def __call__(self, data) -> tuple:
        self.reference.set_train(False)
        batches = sequential_batches(data, self.batch)
        budgets = self.budgets
        if budgets is None:
            budgets = pair_label_budgets([(data, idx) for idx in batches], self.batch)
        chosen, rejected = [], []
        for idx in batches:
            ids, label_at, label_ids, _, _ = pair_batch(data, idx, self.batch, self.pad, budgets=budgets)
            out = self._forward(self.ms.Tensor(ids), self.ms.Tensor(label_at), self.ms.Tensor(label_ids)).asnumpy()
            chosen.append(out[:len(idx)])
            rejected.append(out[self.batch:self.batch + len(idx)])
        return np.concatenate(chosen).astype(np.float32), np.concatenate(rejected).astype(np.float32)


def reference_logps(run, reference, sets: dict, batch_size: int, pad_id: int) -> dict:
    """{name: (chosen [N], rejected [N])}: read from RUN_DIR/reference_logps.npz when a previous session of this
    run wrote it (the run's fingerprint pins the data and model), else computed now and written there."""
    path = os.path.join(run.run_dir, REFERENCE_FILE)
    if os.path.isfile(path):
        with np.load(path) as saved:
            found = {name: (saved[f"{name}_chosen"], saved[f"{name}_rejected"]) for name in sets
                     if f"{name}_chosen" in saved.files}
        if all(name in found and len(found[name][0]) == len(data) for name, data in sets.items()):
            return found
    batches = [(data, idx) for data in sets.values() for idx in sequential_batches(data, batch_size)]
    budgets = pair_label_budgets(batches, batch_size)   # one compiled shape for every set
    compute = ReferenceLogps(reference, run.config, batch_size, pad_id, run.rank, budgets)
    found = {name: compute(data) for name, data in sets.items()}
    if run.rank == 0:
        with atomic_write(path, "wb") as f:
            np.savez(f, **{f"{n}_{side}": v for n, (c, r) in found.items() for side, v in (("chosen", c),
                                                                                          ("rejected", r))})
    return found


def run(config) -> dict:
    config, checked = check(config)
    cfg, spec, tok = config, checked[1].spec, checked[1].tokenizer
    pad = spec.pad_token_id
    train, held_out = stage_sets(cfg, tok, pad)   # tokenized once into the cache, read memory-mapped
    run = prepare_run(config, checked)
    sampler = run.sampler(train)
    pairs = sampler.batch
    policy, reference, pool = build_networks(run, 2 * pairs)

    refs, initial = {}, {}
    if reference is not None and cfg.dpo.precompute_reference:
        sets = {"train": train, **({"eval": held_out} if held_out is not None else {})}
        refs = reference_logps(run, reference, sets, pairs, pad)
        reference = None   # the loss reads the saved numbers instead
        if "eval" in refs and run.rank == 0:
            initial["initial_logp_accuracy"] = float(np.mean(refs["eval"][0] > refs["eval"][1]))
            print(f"dpo: the reference prefers chosen on {initial['initial_logp_accuracy']:.3f} of the held-out "
                  "pairs (log-probability)", flush=True)
    from mindtune.peft import count_parameters
    trainable, total = count_parameters(policy)
    if run.rank == 0:
        copies = f"{pool.copies} base cop{'y' if pool.copies == 1 else 'ies'} held"
        ref = "none (simpo)" if cfg.dpo.loss == "simpo" else \
            f"{'precomputed' if refs else 'the starting model'}, {copies}"
        print(f"dpo: {len(train)} training pairs ({train.dropped} dropped as too long), loss={cfg.dpo.loss}, "
              f"beta={cfg.dpo.beta}, peft={cfg.peft.method}, trainable parameters {trainable:,} / {total:,}; "
              f"reference: {ref}", flush=True)

    budgets = planned_budgets(cfg, train, held_out, sampler)
    if run.rank == 0 and budgets:
        print("dpo: the loss reads the logits of at most " + ", ".join(
            f"{budgets[n]} of {2 * pairs * n}" for n in sorted(budgets)) +
            " positions a batch (those with a label)", flush=True)

    def eval_batches():
        for idx in sequential_batches(held_out, pairs):
            yield pair_batch(held_out, idx, pairs, pad, refs.get("eval"), budgets)

    task = TrainTask(loss_cell=DPOLoss(policy.network, reference, cfg.dpo), aux_names=METRICS,
                     trainable=policy.trainable,
                     train_batch=lambda k: pair_batch(train, sampler.indices(k), pairs, pad, refs.get("train"),
                                                      budgets),
                     eval_batches=eval_batches if held_out is not None else None,
                     tokens_in=lambda batch: int((batch[0] != pad).sum()),
                     loss_tokens=lambda batch: float(batch[3].sum()),   # the loss is a mean over real pairs
                     log_row=mixture_log_row(cfg, sampler, train), fingerprint=run_fingerprint(cfg))
    summary = Trainer(cfg, run.run_dir, task, run.profile, desc="dpo", run=run).fit()
    last = summary.get("last", {})
    result = {k: last[k] for k in ("eval_accuracy", "eval_reward_margin", "eval_logp_accuracy", "eval_loss")
              if k in last}
    result.update(initial)
    if run.rank == 0:
        save_final(run, policy, meta={"dpo": {"loss": cfg.dpo.loss, "beta": cfg.dpo.beta, **result}})
    extra = ""
    if "eval_accuracy" in last:
        extra = (f"held-out reward accuracy {last['eval_accuracy']:.3f}, margin {last['eval_reward_margin']:.3f} "
                 f"(chosen {last['eval_reward_chosen']:.3f}, rejected {last['eval_reward_rejected']:.3f}); the "
                 f"policy prefers chosen on {last['eval_logp_accuracy']:.3f}"
                 + (f" (the reference: {initial['initial_logp_accuracy']:.3f})" if initial else ""))
    print_summary(run, summary, extra=extra)
    return summary


def check_rows(rows):
    """Row-format check for `mindtune validate`: every row must be a preference pair (raises with file:line)."""
    from mindtune.data.preference import preference_pair

    for where, row in rows:
        preference_pair(row, where)
