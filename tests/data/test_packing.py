"""Sequence packing on the data side: which rows share a pack, and the arrays a packed batch holds."""
import numpy as np
import pytest

from mindtune.data.packing import PackedSFTSet, pack_rows

IGNORE = -100


def test_best_fit_decreasing_by_hand():
    # longest first: row 4 (6) opens pack 0 (room 2); row 0 (5) and row 2 (4) open packs 1 (room 3) and 2 (room 4);
    # row 1 (3) goes to the fullest pack it fits, pack 1 (room 3), not pack 2; row 3 (2) fills pack 0
    packs = pack_rows([5, 3, 4, 2, 6], capacity=8)
    assert [p.tolist() for p in packs] == [[4, 3], [0, 1], [2]]


def test_every_row_is_packed_once_and_no_pack_overflows():
    lengths = np.random.default_rng(0).integers(1, 65, 500)
    packs = pack_rows(lengths, capacity=64)
    assert sorted(np.concatenate(packs).tolist()) == list(range(500))
    assert max(lengths[p].sum() for p in packs) <= 64
    assert len(packs) <= int(np.ceil(lengths.sum() / 64 * 1.1))   # best-fit decreasing: near the bound


def test_a_row_longer_than_a_pack_is_refused():
    with pytest.raises(ValueError, match="a row of 9 tokens does not fit a pack of 8"):
        pack_rows([3, 9], capacity=8)


class Rows:
    """The SFTSet attributes packing reads, over rows given as (tokens, labels) lists; two sources."""

    def __init__(self, sources):
        self.rows = [r for source in sources for r in source]
        self.sizes = [len(s) for s in sources]
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        self.names, self.weights, self.pad_id, self.dropped = ["a", "b"][:len(sources)], [1.0] * len(sources), 0, 0
        self.lengths = np.array([len(t) for t, _ in self.rows])
        self.label_counts = np.array([sum(y != IGNORE for y in targets) for _, targets in self.rows])

    def batch(self, idx):
        width = max(self.lengths[idx])
        ids, labels = np.zeros((len(idx), width), np.int32), np.full((len(idx), width), IGNORE, np.int32)
        for k, i in enumerate(idx):
            tokens, targets = self.rows[i]
            ids[k, :len(tokens)], labels[k, :len(targets)] = tokens, targets
        return ids, labels


def test_a_packed_batch_holds_each_row_with_its_own_positions_and_segment():
    first = [([11, 12, 13], [12, 13, IGNORE]), ([21, 22], [IGNORE, IGNORE]), ([31, 32, 33, 34], [IGNORE, 33, 34, IGNORE])]
    second = [([41, 42, 43, 44, 45, 46], [42, 43, 44, 45, 46, IGNORE])]
    packed = PackedSFTSet(Rows([first, second]), capacity=8)
    # source a: row 2 (4) then row 0 (3) share a pack (room 1 left), row 1 (2) opens another; source b: row 3 alone
    assert [p.tolist() for p in packed.packs] == [[2, 0], [1], [3]]
    assert packed.sizes == [2, 1] and packed.lengths.tolist() == [7, 2, 6] and packed.label_counts.tolist() == [4, 0, 5]
    assert packed.fill == pytest.approx(15 / 24)
    ids, labels, positions, segments = packed.batch([0, 2])
    assert ids.tolist() == [[31, 32, 33, 34, 11, 12, 13, 0], [41, 42, 43, 44, 45, 46, 0, 0]]
    # labels stay inside their row: the last token of row 2 does not predict row 0's first
    assert labels.tolist() == [[IGNORE, 33, 34, IGNORE, 12, 13, IGNORE, IGNORE],
                               [42, 43, 44, 45, 46, IGNORE, IGNORE, IGNORE]]
    assert positions.tolist() == [[0, 1, 2, 3, 0, 1, 2, 0], [0, 1, 2, 3, 4, 5, 0, 0]]
    assert segments.tolist() == [[1, 1, 1, 1, 2, 2, 2, 0], [1, 1, 1, 1, 1, 1, 0, 0]]
    assert all(a.dtype == np.int32 and a.shape == (2, 8) for a in (ids, labels, positions, segments))


def test_a_mixture_draws_and_logs_packs_of_each_source():
    from types import SimpleNamespace

    from mindtune.data.sampler import make_sampler
    from mindtune.stages.common import mixture_log_row

    short = [([1, 2], [2, IGNORE])] * 8               # 4 packs of two rows at capacity 4
    long = [([1, 2, 3, 4], [2, 3, 4, IGNORE])] * 3    # 3 packs of one row
    packed = PackedSFTSet(Rows([short, long]), capacity=4)
    assert packed.sizes == [4, 3] and len(packed) == 7
    sampler = make_sampler(packed, batch_size=1, seed=0)
    drawn = [int(sampler.indices(k)[0]) for k in range(5)]
    config = SimpleNamespace(train=SimpleNamespace(log_every=1, max_steps=5, grad_accum=1))
    row = mixture_log_row(config, sampler, packed)(4, {"loss": 1.0})
    assert row["packs_a"] == sum(d < 4 for d in drawn) and row["packs_b"] == sum(d >= 4 for d in drawn)
    assert "rows_a" not in row
