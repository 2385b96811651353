"""Sequence packing: several SFT rows in one sequence of `data.max_length` tokens, each row attending only to
itself.

Padding makes a set of short rows pay for the longest one in each batch. Packing places whole rows one after
another in sequences of one fixed length (one compiled shape, as Ascend wants), chosen by best-fit decreasing
(longest row first, into the fullest sequence it still fits), so almost no position is padding. Each packed
sequence carries, beside its token ids and labels, every token's position within its own row (rotary
positions restart at 0 for each row) and its row's segment number (1, 2, ... within the sequence, 0 on
padding); the model's packed forward (`mindtune.models.causal_lm`) turns these into a block-diagonal causal
mask, so every token sees exactly the tokens it would see in its own unpacked row, and its loss is the same.
Labels are pre-shifted inside each row (the last token of a row has none), so no row predicts the next row's
first token.

Rows are packed within each source of a mixture, so a pack belongs to one source and the mixture's weights draw
packs. The packs are fixed for the run (the sampler shuffles them each epoch), as LLaMA-Factory packs once at
preprocessing.
"""
import numpy as np

from mindtune.data.sets import IGNORE


def pack_rows(lengths, capacity: int) -> list:
    """Best-fit decreasing: row ids grouped into packs whose lengths sum to at most `capacity`. Rows are taken
    longest first (ties by row id) and each goes into the pack with the least room that still holds it, or a new
    pack; returns the packs in creation order, each an int64 array of row ids in the order they were placed."""
    lengths = np.asarray(lengths, np.int64)
    if lengths.size and lengths.max() > capacity:
        raise ValueError(f"a row of {lengths.max()} tokens does not fit a pack of {capacity}")
    # open[r]: the packs with exactly r tokens of room left, as a stack; has_room[r] marks the non-empty ones
    open_packs = [[] for _ in range(capacity + 1)]
    has_room = np.zeros(capacity + 1, bool)
    packs = []
    for row in np.argsort(-lengths, kind="stable"):
        need = int(lengths[row])
        fits = int(np.argmax(has_room[need:])) + need   # the least room >= need, if any pack has it
        if not has_room[fits]:
            packs.append([int(row)])
            pack, room = len(packs) - 1, capacity - need
        else:
            pack = open_packs[fits].pop()
            has_room[fits] = bool(open_packs[fits])
            packs[pack].append(int(row))
            room = fits - need
        if room > 0:
            open_packs[room].append(pack)
            has_room[room] = True
    return [np.asarray(p, np.int64) for p in packs]


class PackedSFTSet:
    """An SFT set (mindtune.data.sets.SFTSet) seen as packs of its rows: the same interface, a pack per index.

    batch(idx) -> (input_ids [b, L], labels [b, L], positions [b, L], segments [b, L]), L = max_length, int32.
    """
    unit = "packs"

    def __init__(self, rows, capacity: int):
        self.rows, self.pad_id, self.max_length = rows, rows.pad_id, capacity
        self.names, self.weights = rows.names, rows.weights
        self.dropped = rows.dropped
        self.packs, self.sizes = [], []
        for start, size in zip(rows.starts[:-1], rows.sizes):
            source = pack_rows(rows.lengths[start:start + size], capacity)
            self.packs += [p + start for p in source]
            self.sizes.append(len(source))
        self.lengths = np.array([rows.lengths[p].sum() for p in self.packs], np.int64)
        self.label_counts = np.array([rows.label_counts[p].sum() for p in self.packs], np.int64)

    def __len__(self):
        return len(self.packs)

    @property
    def fill(self) -> float:
        """The share of packed positions that hold a token."""
        return float(self.lengths.sum()) / max(len(self.packs) * self.max_length, 1)

    def batch(self, idx):
        idx = np.asarray(idx).reshape(-1)
        shape = (len(idx), self.max_length)
        input_ids, labels = np.full(shape, self.pad_id, np.int32), np.full(shape, IGNORE, np.int32)
        positions, segments = np.zeros(shape, np.int32), np.zeros(shape, np.int32)
        for out, pack in enumerate(idx):
            members = self.packs[int(pack)]
            ids, targets = self.rows.batch(members)
            at = 0
            for segment, n in enumerate(self.rows.lengths[members], start=1):
                k = slice(at, at + int(n))
                input_ids[out, k], labels[out, k] = ids[segment - 1, :n], targets[segment - 1, :n]
                positions[out, k], segments[out, k] = np.arange(n), segment
                at += int(n)
        return input_ids, labels, positions, segments
