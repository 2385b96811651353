"""Reward-model training (InstructGPT step 2): a Llama backbone (full or PEFT) plus a scalar score head, trained
on preference pairs with the Bradley-Terry loss.

Both sides of every pair go through the model in one batch: rows 0..B-1 are the chosen responses, rows B..2B-1
the rejected ones. The score is read at each sequence's last real token. After training, the rewards of a
held-out (or training) sample give the mean and std that are saved with the head in RUN_DIR/model, so PPO can
load the reward model on its own and normalise its scores.
"""
import dataclasses

import numpy as np
from mindspore import nn

from mindtune.data.loading import stage_sets
from mindtune.engine import compile_cache
from mindtune.engine.graph import CompiledFunction
from mindtune.engine.trainer import Trainer, TrainTask
from mindtune.errors import CheckpointError
from mindtune.models.heads import SCORE_HEAD, RewardModel, ScoreHead, split_head_weights
from mindtune.peft import count_parameters
from mindtune.rlhf.losses import pairwise_loss, pairwise_metrics
from mindtune.stages.common import (build_adapted, check_inputs, prepare_run, print_summary,
                                    run_fingerprint, save_final, mixture_log_row)  # noqa: I001

METRICS = ("accuracy", "reward_margin", "reward_mean", "reward_std")


class PairwiseRewardLoss(nn.Cell):
    """(input_ids [2B, L], last_index [2B], margin [B], weight [B]) -> (loss, (accuracy, margin, mean, std))."""

    def __init__(self, reward_model, center_coef: float = 0.0):
        super().__init__(auto_prefix=False)
        self.reward_model = reward_model
        self.center_coef = center_coef

    def construct(self, input_ids, last_index, margin, weight):
        rewards = self.reward_model(input_ids, last_index)
        b = margin.shape[0]
        chosen, rejected = rewards[:b], rewards[b:]
        loss = pairwise_loss(chosen, rejected, margin, self.center_coef, weight)
        return loss, pairwise_metrics(chosen, rejected, weight)


def pair_batch(data, idx, batch_size: int, pad_id: int):
    """The loss cell's inputs for pairs `idx`, padded with zero-weight filler pairs to batch_size."""
    n = len(idx)
    ids = np.concatenate([data.chosen[idx], data.rejected[idx]])
    last = np.concatenate([data.chosen_last[idx], data.rejected_last[idx]])
    margin, weight = data.margin[idx], np.ones(n, np.float32)
    if n < batch_size:
        fill = batch_size - n
        filler = np.full((fill, ids.shape[1]), pad_id, np.int32)
        ids = np.concatenate([ids[:n], filler, ids[n:], filler])
        last = np.concatenate([last[:n], np.zeros(fill, np.int32), last[n:], np.zeros(fill, np.int32)])
        margin = np.concatenate([margin, np.zeros(fill, np.float32)])
        weight = np.concatenate([weight, np.zeros(fill, np.float32)])
    return ids, last, margin, weight


class Scorer:
    """Rewards of token sequences in fixed-size compiled batches (the last batch padded with filler rows)."""

    def __init__(self, reward_model, batch_size: int, pad_id: int, cache=None):
        import mindspore as ms

        self.ms, self.batch_size, self.pad_id = ms, batch_size, pad_id
        self.reward_model = reward_model

        def forward(input_ids, last_index):
            return reward_model(input_ids, last_index)

        self._forward = CompiledFunction(forward, [reward_model], cache=cache, label="rm.score")

    def __call__(self, ids: np.ndarray, last: np.ndarray) -> np.ndarray:
        self.reward_model.set_train(False)
        b, out = self.batch_size, []
        for i in range(0, len(ids), b):
            chunk, chunk_last = ids[i:i + b], last[i:i + b]
            n = len(chunk)
            if n < b:
                chunk = np.concatenate([chunk, np.full((b - n, ids.shape[1]), self.pad_id, np.int32)])
                chunk_last = np.concatenate([chunk_last, np.zeros(b - n, np.int32)])
            rewards = self._forward(self.ms.Tensor(chunk), self.ms.Tensor(chunk_last))
            out.append(rewards.asnumpy()[:n])
        return np.concatenate(out).astype(np.float64)


def reward_stats(chosen: np.ndarray, rejected: np.ndarray) -> dict:
    """The held-out numbers saved with the model (numpy twin of pairwise_metrics, over all pairs at once)."""
    rewards = np.concatenate([chosen, rejected])
    return {"accuracy": float(np.mean(chosen > rejected)), "margin": float(np.mean(chosen - rejected)),
            "reward_mean": float(rewards.mean()), "reward_std": float(rewards.std()), "pairs": int(len(chosen))}


def run(config) -> dict:
    checked = check_inputs(config)  # every input, data rows included, is checked before the run directory exists
    cfg, spec, tok = config, checked[1].spec, checked[1].tokenizer
    pad, b = spec.pad_token_id, cfg.train.batch_size
    train, held_out = stage_sets(cfg, tok, pad)   # tokenized once into the cache, read memory-mapped
    run = prepare_run(config, checked)

    # the backbone runs chosen and rejected together: 2B sequences per micro-batch
    lm, adapted = build_adapted(_with_batch(run, 2 * b))
    head = ScoreHead(spec.hidden_size, seed=cfg.seed)
    reward_model = RewardModel(adapted.network, head)
    trainable, total = count_parameters(adapted)
    trainable += head.weight.size
    if run.rank == 0:
        print(f"rm: {len(train)} training pairs ({train.dropped} dropped as too long), peft={cfg.peft.method}, "
              f"trainable parameters {trainable:,} / {total + head.weight.size:,} "
              f"({100 * trainable / (total + head.weight.size):.3f}%, score head included)", flush=True)

    sampler = run.sampler(train)
    pairs = sampler.batch  # pairs per compiled step: b, or the global batch under semi-auto parallel

    def eval_batches():
        for i in range(0, len(held_out), pairs):
            yield pair_batch(held_out, np.arange(i, min(i + pairs, len(held_out))), pairs, pad)

    task = TrainTask(loss_cell=PairwiseRewardLoss(reward_model, cfg.rm.center_rewards_coef), aux_names=METRICS,
                     trainable=list(adapted.trainable) + [head.weight],
                     train_batch=lambda k: pair_batch(train, sampler.indices(k), pairs, pad),
                     eval_batches=eval_batches if held_out is not None else None,
                     tokens_in=lambda batch: int((batch[0] != pad).sum()),
                     loss_tokens=lambda batch: float(batch[3].sum()),   # the loss is a mean over real pairs
                     log_row=mixture_log_row(cfg, sampler, train), fingerprint=run_fingerprint(cfg))
    # Exact reward statistics over whole pairs (the engine's eval_* numbers are means of batch means).
    stats_set, split = (held_out, "data.eval") if held_out is not None else (train, "data.train")
    n = min(len(stats_set), cfg.rm.stats_pairs)
    scorer = Scorer(reward_model, 2 * pairs, pad, compile_cache.for_run(cfg, run.rank))

    def measure():
        return reward_stats(scorer(stats_set.chosen[:n], stats_set.chosen_last[:n]),
                            scorer(stats_set.rejected[:n], stats_set.rejected_last[:n]))

    # before training: what the base model plus the untrained head already gets right
    initial = measure() if cfg.rm.stats_at_start else None
    summary = Trainer(cfg, run.run_dir, task, run.profile, desc="rm", run=run).fit()
    stats = measure()
    stats.update(split=split, max_length=cfg.data.max_length, head=SCORE_HEAD)
    if initial:
        stats["initial_accuracy"] = initial["accuracy"]
    summary["reward_stats"] = stats
    if run.rank == 0:
        save_final(run, adapted, extra_weights=head.weights(), meta={"reward_model": stats})
    start = f" (before training {initial['accuracy']:.3f})" if initial else ""
    print_summary(run, summary, extra=f"reward model on {n} pairs of {split}: accuracy {stats['accuracy']:.3f}"
                                      f"{start}, mean margin {stats['margin']:.3f}, rewards "
                                      f"{stats['reward_mean']:.3f} +- {stats['reward_std']:.3f}")
    return summary


def _with_batch(run, batch_size: int):
    """The run with train.batch_size replaced, for building a backbone that sees both sides of each pair."""
    cfg = run.config
    return dataclasses.replace(run, config=dataclasses.replace(
        cfg, train=dataclasses.replace(cfg.train, batch_size=batch_size)))


def load_reward_model(path: str, profile, batch_size: int, seq_length: int = 0, key: str = "--model"):
    """(RewardModel, ResolvedModel, reward stats) from an RM run directory or its model/ (full or adapter).

    The network is built for `seq_length` tokens (default: the data.max_length it was trained with).
    """
    import os

    from mindtune import peft
    from mindtune.models.build import build_llama, load_weights
    from mindtune.models.causal_lm import CausalLM
    from mindtune.models.convert import find_model_dir
    from mindtune.models.loading import resolve_model

    if not os.path.exists(path):
        raise CheckpointError(f"{key}: {path} not found")
    resolved = resolve_model(find_model_dir(path), key=key)
    model_dir = resolved.model_dir
    stats = (model_dir.meta.get("reward_model") if model_dir else None) or {}
    if not stats:
        raise CheckpointError(f"{key}: {resolved.source} is not a reward model (train one with stage: rm)")
    weights, head_weights = split_head_weights(model_dir.weights(), stats.get("head", SCORE_HEAD))
    if not seq_length and "max_length" not in stats:
        raise CheckpointError(f"{key}: {model_dir.path}/mindtune_model.json: reward_model has no max_length; "
                              "give the sequence length (--max-length)")
    seq_length = seq_length or stats["max_length"]
    if model_dir.is_adapter:
        from mindtune.peft.inference import read_adapter

        peft_cfg, _ = read_adapter(resolved)
        seed = model_dir.meta.get("base_seed", 0)
        llama = build_llama(resolved.spec, profile, seq_length + peft.extra_positions(peft_cfg), batch_size,
                            initialise=False)
        load_weights(llama, resolved.base_weights(seed), where=model_dir.meta["base_model"])
        network = peft.apply_peft(CausalLM(llama), peft_cfg, resolved.spec, tokenizer=resolved.tokenizer,
                                  seed=seed, saved=weights, where=model_dir.path).network
    else:
        llama = build_llama(resolved.spec, profile, seq_length, batch_size, initialise=False)
        load_weights(llama, weights, where=model_dir.path)
        network = CausalLM(llama)
    head = ScoreHead(resolved.spec.hidden_size, name=stats.get("head", SCORE_HEAD))
    head.load(head_weights, model_dir.path)
    return RewardModel(network, head), resolved, stats


def check_rows(rows):
    """Row-format check for `mindtune validate`: every row must be a preference pair (raises with file:line)."""
    from mindtune.data.preference import preference_pair

    for where, row in rows:
        preference_pair(row, where)
