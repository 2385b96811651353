"""Which rows make micro-batch k: seeded, a pure function of k (so a resumed run continues exactly), split
disjointly across data-parallel ranks.

The global stream is a sequence of row ids, position p = 0, 1, 2, ...:
- one source: seeded per-epoch permutations of the rows, back to back;
- a mixture: positions are dealt to sources in blocks of BLOCK positions; over the first b blocks source s gets
  floor(w_s * BLOCK * b) positions (the heaviest source the rest), shuffled within each block by the seed, so
  after any number of rows every source's share is its weight to within one row per block boundary; source s's
  j-th draw is row j of its own seeded per-epoch permutations.
Micro-batch k of rank r of `world` is positions [(k * world + r) * batch, ... + batch): the global batch k is
the world's micro-batches k side by side, so a data-parallel run sees the batches one device with world x batch
would. `group_by_length` (Hugging Face Trainer's semantics) sorts each mega-batch of MEGA global batches by
length, longest first, so a batch holds rows of similar length (one source: mega-batches never cross an epoch).
"""
from typing import Optional, Sequence

import numpy as np

BLOCK = 1024   # mixture positions dealt per block (at least sources^2, so every count stays non-negative)
MEGA = 50      # group_by_length: global batches per mega-batch (transformers' LengthGroupedSampler)


class EpochStream:
    """One source: seeded per-epoch permutations."""

    def __init__(self, n: int, seed: int, salt: Sequence[int] = ()):
        self.n, self.seed, self.salt = n, seed, tuple(salt)
        self.sizes, self._perms = [n], {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, *self.salt, epoch]).permutation(self.n)}
        return self._perms[epoch]

    def rows(self, positions: np.ndarray) -> np.ndarray:
        return np.array([self._perm(int(g) // self.n)[int(g) % self.n] for g in positions], np.int64)

    def seen(self, end: int) -> np.ndarray:
        """Rows drawn from each source at positions [0, end)."""
        return np.array([end], np.int64)


class MixtureStream:
    """Weighted draws from several sources, indexed as one (source s's rows start at sum(sizes[:s]))."""

    def __init__(self, sizes: Sequence[int], weights: Sequence[float], seed: int):
        self.sizes, self.seed = list(sizes), seed
        w = np.asarray(weights, np.float64)
        self.weights = w / w.sum()
        self.block = max(BLOCK, len(sizes) ** 2)
        self.heaviest = int(np.argmax(self.weights))
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.streams = [EpochStream(n, seed, salt=(2, s)) for s, n in enumerate(sizes)]
        self._block = (None, None, None)

    def dealt(self, blocks: int) -> np.ndarray:
        """Positions each source got in the first `blocks` blocks."""
        counts = np.floor(self.weights * self.block * blocks).astype(np.int64)
        counts[self.heaviest] = 0
        counts[self.heaviest] = self.block * blocks - counts.sum()
        return counts

    def _deal(self, b: int):
        """(source of each position of block b, its draw number within the source)."""
        if self._block[0] != b:
            counts = self.dealt(b + 1) - self.dealt(b)
            sources = np.random.default_rng([self.seed, 1, b]).permutation(np.repeat(np.arange(len(counts)), counts))
            draws = np.empty(self.block, np.int64)
            before = self.dealt(b)
            for s in range(len(counts)):
                at = np.nonzero(sources == s)[0]
                draws[at] = before[s] + np.arange(len(at))
            self._block = (b, sources, draws)
        return self._block[1], self._block[2]

    def rows(self, positions: np.ndarray) -> np.ndarray:
        out = np.empty(len(positions), np.int64)
        for k, p in enumerate(positions):
            sources, draws = self._deal(int(p) // self.block)
            s = sources[int(p) % self.block]
            out[k] = self.starts[s] + self.streams[s].rows([draws[int(p) % self.block]])[0]
        return out

    def seen(self, end: int) -> np.ndarray:
        b, o = divmod(end, self.block)
        sources, _ = self._deal(b)
        return self.dealt(b) + np.bincount(sources[:o], minlength=len(self.sizes))


class Sampler:
    """indices(k): the row ids of micro-batch k for this rank. `batch` rows per micro-batch."""

    def __init__(self, stream, batch_size: int, world: int = 1, rank: int = 0,
                 lengths: Optional[np.ndarray] = None, group_by_length: bool = False):
        self.stream, self.batch, self.world, self.rank = stream, batch_size, world, rank
        self.lengths = np.asarray(lengths) if group_by_length else None
        self.mega = MEGA * batch_size * world
        self._sorted = (None, None)

    def _positions(self, start: int, stop: int) -> np.ndarray:
        if self.lengths is None:
            return self.stream.rows(np.arange(start, stop))
        out = []
        for p in range(start, stop):
            first = self._mega_start(p)
            out.append(self._mega(first)[p - first])
        return np.array(out, np.int64)

    def _mega_start(self, p: int) -> int:
        """First position of the mega-batch holding position p; one source's mega-batches stay inside an epoch
        (as Hugging Face's do), so no row is in one twice."""
        epoch = getattr(self.stream, "n", 0)
        if not epoch:
            return p // self.mega * self.mega
        return p // epoch * epoch + (p % epoch) // self.mega * self.mega

    def _mega(self, first: int) -> np.ndarray:
        """The rows of the mega-batch starting at `first`, longest first (a stable sort keeps the shuffled order
        among equal lengths)."""
        if self._sorted[0] != first:
            epoch = getattr(self.stream, "n", 0)
            end = first + self.mega if not epoch else min(first + self.mega, (first // epoch + 1) * epoch)
            rows = self.stream.rows(np.arange(first, end))
            self._sorted = (first, rows[np.argsort(-self.lengths[rows], kind="stable")])
        return self._sorted[1]

    def indices(self, k: int) -> np.ndarray:
        start = (k * self.world + self.rank) * self.batch
        return self._positions(start, start + self.batch)

    def first_batches(self, count: int) -> list:
        """The row ids of the stream's first `count` micro-batches, every rank's in order (the same list on every
        rank): what a run will read, for planning its shapes before it starts."""
        return [self._positions(j * self.batch, (j + 1) * self.batch) for j in range(count)]

    def seen(self, micro_batches: int) -> np.ndarray:
        """Rows drawn from each source by the whole world in its first `micro_batches` micro-batches per rank."""
        end = micro_batches * self.world * self.batch
        if self.lengths is None or len(self.stream.sizes) == 1:
            return self.stream.seen(end)
        first = self._mega_start(end)
        starts = np.concatenate([[0], np.cumsum(self.stream.sizes)])
        extra = np.bincount(np.searchsorted(starts, self._mega(first)[:end - first], side="right") - 1,
                            minlength=len(self.stream.sizes))
        return self.stream.seen(first) + extra


def make_sampler(data, batch_size: int, seed: int, world: int = 1, rank: int = 0, group_by_length: bool = False,
                 salt: Sequence[int] = ()) -> Sampler:
    """The sampler of a set (its sources, weights and lengths) or of a plain row count."""
    if isinstance(data, (int, np.integer)):
        return Sampler(EpochStream(int(data), seed, salt), batch_size, world, rank)
    sizes = getattr(data, "sizes", [len(data)])
    if len(sizes) == 1:
        stream = EpochStream(sizes[0], seed, salt)
    else:
        stream = MixtureStream(sizes, data.weights, seed + sum(salt))
    lengths = getattr(data, "lengths", None)
    if group_by_length and lengths is None:
        raise ValueError("group_by_length needs row lengths")
    return Sampler(stream, batch_size, world, rank, lengths, group_by_length)


def EpochSampler(num_rows: int, batch_size: int, seed: int, world: int = 1, rank: int = 0) -> Sampler:  # noqa: N802
    """Micro-batch k of seeded per-epoch permutations of `num_rows` rows (the single-source stream)."""
    return Sampler(EpochStream(num_rows, seed), batch_size, world, rank)
