"""Length buckets: run each batch at the shortest of a few fixed sequence lengths that holds its longest row.

Padding every batch to `data.max_length` makes a dataset of short rows pay for the longest row allowed. Trimming
each batch to its own longest row would compile a new graph for every new length (Ascend runs static shapes;
on CPU a SmolLM2 training step compiles in about half a minute), so a batch is cut to the smallest of a few
bucket lengths that still holds its longest row. The lengths are planned from the run's own batches before it
starts: the `count` multiples of 8 that minimise the padded tokens of those batches (an exact dynamic programme
over their longest rows), the longest of them holding the longest batch; `data.max_length` stays as a last
resort for a batch no planned length holds. Rows are right padded and attention is causal, so the cut removes
only padding: every real token's loss is unchanged.

The loss then runs the output projection at the labelled positions only (`mindtune.engine.losses.CausalLMLoss`):
a batch's labels become a fixed number K of flat positions and targets (`gather_labels`). K is planned the same
way, from the run's batches: per bucket length, the most labelled positions any planned batch at that length
holds, rounded up to a multiple of 16; a batch with more (one the plan did not read) runs at K = rows * length.
"""
import numpy as np

from mindtune.data.sets import IGNORE

MULTIPLE = 8
LABEL_MULTIPLE = 16    # label budgets: a whole number of the 16 x 16 blocks Ascend's matrix unit works in


def plan_lengths(batch_longest, count: int, max_length: int) -> list:
    """The bucket lengths for batches whose longest rows are `batch_longest`, shortest first: at most `count`
    multiples of 8 minimising the sum over batches of the length each runs at, then `max_length`."""
    need = np.minimum(-(-np.asarray(batch_longest, np.int64) // MULTIPLE) * MULTIPLE, max_length)
    if need.size == 0 or count <= 1:
        return [max_length]
    lengths, batches = np.unique(need, return_counts=True)
    held = np.cumsum(batches).astype(np.float64)       # batches that lengths[j] holds
    # cost[k][j]: the least total length of the batches lengths[j] holds, with k + 1 buckets, lengths[j] the
    # longest; came_from[k][j]: the next shorter bucket on that plan
    cost, came_from = [lengths * held], [None]
    for _ in range(count - 1):
        step = cost[-1][:, None] + lengths[None, :] * (held[None, :] - held[:, None])   # [shorter i, longer j]
        step[np.tril_indices(len(lengths))] = np.inf
        came_from.append(step.argmin(axis=0))
        cost.append(step.min(axis=0))
    k = int(np.argmin([c[-1] for c in cost]))
    chosen, j = [], len(lengths) - 1
    while True:
        chosen.append(int(lengths[j]))
        if k == 0:
            break
        j, k = int(came_from[k][j]), k - 1
    return sorted(set(chosen) | {max_length})


def longest_row(input_ids: np.ndarray, pad_id: int) -> int:
    """Length of the longest right-padded row (pad never occurs inside real text: the data checks reject it)."""
    real = np.asarray(input_ids) != pad_id
    if not real.any():
        return 1
    return int(real.shape[1] - np.argmax(real[:, ::-1].any(axis=0)))


def bucket_of(length: int, buckets: list) -> int:
    """The smallest bucket that holds a row of `length` tokens (the last, data.max_length, for any other)."""
    return next((b for b in buckets if b >= length), buckets[-1])


def trim_batch(batch: tuple, pad_id: int, buckets: list) -> tuple:
    """Cut every [rows, max_length] array of `batch` to the smallest bucket >= the longest row of batch[0]."""
    length = bucket_of(longest_row(batch[0], pad_id), buckets)
    return tuple(np.ascontiguousarray(np.asarray(x)[:, :length]) for x in batch)


def plan_label_budgets(batch_lengths, batch_labels, rows: int) -> dict:
    """{length: K}: for each length batches run at, the most labelled positions of any of those batches, rounded
    up to a multiple of 16 (at most rows * length)."""
    budgets = {}
    for length, labels in zip(batch_lengths, batch_labels):
        budgets[int(length)] = max(budgets.get(int(length), 0), int(labels))
    return {length: min(-(-max(most, 1) // LABEL_MULTIPLE) * LABEL_MULTIPLE, rows * length)
            for length, most in budgets.items()}


def gather_labels(batch: tuple, budgets: dict = None) -> tuple:
    """(input_ids, labels [B, T], *rest) -> (input_ids, label_at [K], label_ids [K], *rest): the labelled
    positions as flat indices into B * T and their targets, padded with index 0 and IGNORE to the budget planned
    for length T, or to B * T when there is none or the batch holds more."""
    input_ids, labels, *rest = batch
    labels = np.asarray(labels)
    at = np.flatnonzero(labels.reshape(-1) != IGNORE).astype(np.int32)
    size = labels.size
    budget = (budgets or {}).get(labels.shape[1], size)
    if at.size > budget:
        budget = size
    label_at = np.zeros(budget, np.int32)
    label_ids = np.full(budget, IGNORE, np.int32)
    label_at[:at.size] = at
    label_ids[:at.size] = labels.reshape(-1)[at]
    return (input_ids, label_at, label_ids, *rest)
