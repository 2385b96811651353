"""Length buckets: run each batch at the shortest of a few fixed sequence lengths that holds its longest row.

Padding every batch to `data.max_length` makes a dataset of short rows pay for the longest row allowed. Trimming
each batch to its own longest row would compile a new graph for every new length (Ascend runs static shapes;
on CPU a SmolLM2 compile takes most of a minute), so a batch is cut to the smallest of a few bucket lengths that
still holds its longest row. The lengths are planned from the run's own batches before it starts: the `count`
multiples of 8 that minimise the padded tokens of those batches (an exact dynamic programme over their longest
rows), the longest of them holding the longest batch; `data.max_length` stays as a last resort for a batch no
planned length holds. Rows are right padded and attention is causal, so the cut removes only padding: every
real token's loss is unchanged.
"""
import numpy as np

MULTIPLE = 8


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


def trim_batch(batch: tuple, pad_id: int, buckets: list) -> tuple:
    """Cut every [rows, max_length] array of `batch` to the smallest bucket >= the longest row of batch[0]."""
    need = longest_row(batch[0], pad_id)
    length = next((b for b in buckets if b >= need), buckets[-1])
    return tuple(np.ascontiguousarray(np.asarray(x)[:, :length]) for x in batch)
