"""The sampler: data-parallel shards of each global batch, weighted mixtures, group_by_length; all seeded and a
pure function of the micro-batch number (so a resumed run draws what the uninterrupted one would)."""
import numpy as np
import pytest

from mindtune.data.sampler import MEGA, EpochSampler, MixtureStream, Sampler, make_sampler


class FakeSet:
    """What make_sampler reads from a set: the sources' sizes and weights, and row lengths."""

    def __init__(self, sizes, weights, lengths=None):
        self.sizes, self.weights = sizes, weights
        self.lengths = lengths if lengths is not None else np.ones(sum(sizes), np.int32)

    def __len__(self):
        return sum(self.sizes)


def global_batch(samplers, k):
    return [samplers[r].indices(k) for r in range(len(samplers))]


@pytest.mark.parametrize("data", [1000, FakeSet([600, 300, 100], [1, 1, 2]),
                                  FakeSet([1000], [1], np.random.default_rng(0).integers(5, 90, 1000))],
                         ids=["one source", "mixture", "group_by_length"])
def test_rank_shards_are_disjoint_and_cover_each_global_batch(data):
    grouped = isinstance(data, FakeSet) and len(data.sizes) == 1
    world, batch = 4, 3
    ranks = [make_sampler(data, batch, seed=7, world=world, rank=r, group_by_length=grouped) for r in range(world)]
    single = make_sampler(data, batch * world, seed=7, group_by_length=grouped)   # one device, world x batch
    for k in range(60):
        shards = global_batch(ranks, k)
        assert all(len(s) == batch for s in shards)
        together = np.concatenate(shards)
        assert len(set(together.tolist())) == world * batch            # disjoint
        assert together.tolist() == single.indices(k).tolist()        # and exactly the global batch


def test_one_source_keeps_the_epoch_permutations_and_is_a_pure_function_of_k():
    sampler = EpochSampler(10, 4, seed=3)
    first_epoch = np.concatenate([sampler.indices(0), sampler.indices(1), sampler.indices(2)[:2]])
    assert sorted(first_epoch.tolist()) == list(range(10))            # every row once per epoch
    assert first_epoch.tolist() == np.random.default_rng([3, 0]).permutation(10).tolist()
    fresh = EpochSampler(10, 4, seed=3)                                # a resumed run: a new sampler object
    assert fresh.indices(7).tolist() == sampler.indices(7).tolist()
    assert EpochSampler(10, 4, seed=4).indices(0).tolist() != sampler.indices(0).tolist()


def test_mixture_draws_each_source_in_proportion_to_its_weight():
    sizes, weights = [5000, 300, 40], [0.5, 0.3, 0.2]   # the small sources are drawn over many epochs
    data = FakeSet(sizes, weights)
    sampler = make_sampler(data, 8, seed=11)
    starts = np.cumsum([0] + sizes)
    for batches in (50, 200, 700):
        rows = np.concatenate([sampler.indices(k) for k in range(batches)])
        counts = np.bincount(np.searchsorted(starts, rows, side="right") - 1, minlength=3)
        # Tolerance: dealt in blocks of 1024 positions, floor(w * 1024 * b) per finished block, shuffled inside
        # a block; over whole blocks the counts are exact to one row, so we allow 2% of the rows drawn.
        assert np.abs(counts / len(rows) - weights).max() < 0.02, (batches, counts)
        assert counts.tolist() == sampler.seen(batches).tolist()       # what metrics.jsonl reports
    # over whole blocks the share is exact to within a row per source
    mix = MixtureStream(sizes, weights, seed=11)
    assert np.abs(mix.seen(1024 * 10) - 10240 * np.array(weights)).max() <= 1
    # within a source: every row once per its own epoch (40 rows of the third source: 40 draws, 40 distinct rows)
    third = rows[rows >= starts[2]][:40]
    assert sorted(third.tolist()) == list(range(starts[2], starts[3]))
    # resumable and seeded
    assert make_sampler(data, 8, seed=11).indices(123).tolist() == sampler.indices(123).tolist()
    assert make_sampler(data, 8, seed=12).indices(0).tolist() != sampler.indices(0).tolist()


def test_group_by_length_sorts_each_mega_batch_and_keeps_its_rows():
    n, batch = 2000, 4
    lengths = np.random.default_rng(1).integers(1, 500, n)
    data = FakeSet([n], [1], lengths)
    grouped = make_sampler(data, batch, seed=5, group_by_length=True)
    plain = make_sampler(data, batch, seed=5)
    mega = MEGA  # global batches per mega-batch
    rows = np.concatenate([grouped.indices(k) for k in range(mega)])
    assert sorted(rows.tolist()) == sorted(np.concatenate([plain.indices(k) for k in range(mega)]).tolist())
    assert (np.diff(lengths[rows]) <= 0).all()                         # longest first within the mega-batch
    # batches of similar length: far less padding than the shuffled order
    pad = lambda s: sum(int(lengths[s.indices(k)].max() * batch - lengths[s.indices(k)].sum()) for k in range(mega))
    assert pad(grouped) < pad(plain) / 5
    assert Sampler(grouped.stream, batch, lengths=lengths, group_by_length=True).indices(77).tolist() == \
        grouped.indices(77).tolist()


@pytest.mark.parametrize("grouped", [False, True], ids=["shuffled", "group_by_length"])
def test_first_batches_are_every_ranks_micro_batches_in_order(grouped):
    """What the bucket plan reads: the same list on every rank, rank 0's micro-batch k then rank 1's, ..."""
    data = FakeSet([500], [1], np.random.default_rng(2).integers(5, 90, 500))
    world, batch = 3, 4
    ranks = [make_sampler(data, batch, seed=9, world=world, rank=r, group_by_length=grouped) for r in range(world)]
    expected = [ranks[r].indices(k).tolist() for k in range(5) for r in range(world)]
    for sampler in ranks:
        assert [b.tolist() for b in sampler.first_batches(5 * world)] == expected
