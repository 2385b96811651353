"""Length buckets: run each batch at the shortest of a few fixed sequence lengths that holds its longest row.

Padding every batch to `data.max_length` makes a dataset of short rows pay for the longest row allowed. Trimming
each batch to its own longest row would compile a new graph for every new length (Ascend runs static shapes;
on CPU a SmolLM2 compile takes most of a minute), so a batch is cut to the smallest of `count` bucket lengths
that still holds its longest row: max_length, max_length / 2, max_length / 4, ... (multiples of 8). Rows are
right padded and attention is causal, so the cut removes only padding: every real token's loss is unchanged.
"""
import numpy as np

MIN_BUCKET = 16


def bucket_lengths(max_length: int, count: int) -> list:
    """The compiled sequence lengths, longest last: max_length halved `count - 1` times, multiples of 8."""
    lengths = {max_length}
    length = max_length
    for _ in range(count - 1):
        length = max(MIN_BUCKET, -(-length // 2 // 8) * 8)
        lengths.add(min(length, max_length))
    return sorted(lengths)


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
