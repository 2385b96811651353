"""Length buckets and label budgets: which lengths, where a batch is cut, which positions the loss reads, and that
neither changes any token's loss."""
import numpy as np
import pytest

from mindtune.engine.buckets import gather_labels, longest_row, plan_label_budgets, plan_lengths, trim_batch

PAD = 0


def test_plan_lengths_minimises_the_padded_length():
    # longest rows 10, 12, 30, 31, 60, 100 need 16, 16, 32, 32, 64, 104 (multiples of 8); with two buckets
    # {32, 104} costs 32 * 4 + 104 * 2 = 336, less than {16, 104} (448) and {64, 104} (424)
    longest = [60, 10, 100, 31, 12, 30]
    assert plan_lengths(longest, 2, 128) == [32, 104, 128]     # max_length last, for a batch no plan holds
    # three: {32, 64, 104} costs 296, {16, 32, 104} 304, {16, 64, 104} 328
    assert plan_lengths(longest, 3, 128) == [32, 64, 104, 128]
    assert plan_lengths(longest, 8, 128) == [16, 32, 64, 104, 128]   # never more lengths than the batches need
    assert plan_lengths(longest, 1, 128) == [128]              # one bucket: every batch at max_length
    assert plan_lengths([], 3, 128) == [128]
    assert plan_lengths([130, 5], 2, 128) == [8, 128]          # never beyond max_length


def test_trim_to_smallest_bucket_that_holds_the_longest_row():
    ids = np.zeros((2, 64), np.int32)
    ids[0, :20] = 7
    ids[1, :33] = 9
    labels = np.where(ids != PAD, 5, -100).astype(np.int32)
    assert longest_row(ids, PAD) == 33
    cut_ids, cut_labels = trim_batch((ids, labels), PAD, [16, 32, 48, 64])
    assert cut_ids.shape == cut_labels.shape == (2, 48)
    assert (cut_ids != PAD).sum() == (ids != PAD).sum()
    assert trim_batch((ids[:1], labels[:1]), PAD, [16, 32, 64])[0].shape == (1, 32)
    full = np.full((1, 64), 3, np.int32)
    assert trim_batch((full,), PAD, [16, 32, 64])[0].shape == (1, 64)


@pytest.mark.parametrize("method", ["lora", "prefix", "prompt"])
def test_loss_per_token_unchanged_by_the_cut(method, tmp_path):
    import mindspore as ms

    from mindtune.config import load_config
    from mindtune.engine.losses import CausalLMLoss
    from mindtune.stages.common import build_adapted, check_inputs, prepare_run

    config = load_config(None, ["model.path=tiny", f"peft.method={method}", "data.max_length=32",
                                "train.batch_size=2", f"data.train={__file__}", f"output_dir={tmp_path}"])
    _, adapted = build_adapted(prepare_run(config, check_inputs(config)))
    cell = CausalLMLoss(adapted.network)
    cell.set_train(False)
    rng = np.random.default_rng(0)
    ids = np.zeros((2, 32), np.int32)
    ids[0, :11] = rng.integers(3, 500, 11)
    ids[1, :14] = rng.integers(3, 500, 14)
    labels = np.full((2, 32), -100, np.int32)
    labels[0, 4:10] = ids[0, 5:11]
    labels[1, 6:13] = ids[1, 7:14]
    logits, _ = adapted.network(ms.Tensor(ids))     # every position's logits: the formula the cell must match
    logp = logits.asnumpy() - np.log(np.exp(logits.asnumpy()).sum(-1, keepdims=True))
    at = np.nonzero(labels != -100)
    want = -logp[at[0], at[1], labels[at]].mean()
    padded = cell(*(ms.Tensor(x) for x in gather_labels((ids, labels))))
    short_ids, short_labels = trim_batch((ids, labels), PAD, [16, 32])
    assert short_ids.shape == (2, 16)
    short = cell(*(ms.Tensor(x) for x in gather_labels((short_ids, short_labels), {16: 16})))
    assert float(short[1][0].asnumpy()) == float(padded[1][0].asnumpy()) == 13
    assert float(padded[0].asnumpy()) == pytest.approx(want, rel=1e-5)
    assert float(short[0].asnumpy()) == pytest.approx(want, rel=1e-5)


def test_the_plan_reads_the_batches_the_run_will_train_and_evaluate_on():
    from types import SimpleNamespace

    from mindtune.data.sampler import make_sampler
    from mindtune.stages.sft import planned_shapes

    class Rows(SimpleNamespace):
        def __len__(self):
            return len(self.lengths)

    lengths = np.random.default_rng(3).integers(10, 200, 64)
    train = Rows(lengths=lengths, label_counts=lengths // 3)

    def planned_lengths(*args):
        return planned_shapes(*args)[0]
    cfg = SimpleNamespace(train=SimpleNamespace(length_buckets=3, max_steps=5, grad_accum=2, batch_size=4),
                          data=SimpleNamespace(max_length=256, packing=False))
    sampler = make_sampler(64, 4, seed=1)
    read = [lengths[sampler.indices(k)].max() for k in range(10)]     # 5 steps x 2 micro-batches
    assert planned_lengths(cfg, train, None, sampler) == plan_lengths(read, 3, 256)
    evaluated = Rows(lengths=np.array([230, 20, 20, 20, 20]), label_counts=np.array([200, 5, 5, 5, 5]))
    assert planned_lengths(cfg, train, evaluated, sampler) == plan_lengths(read + [230, 20], 3, 256)
    assert 232 in planned_lengths(cfg, train, evaluated, sampler)
    cfg.data.packing = True      # packed sequences are nearly full: one shape
    assert planned_lengths(cfg, train, evaluated, sampler) == [256]
    cfg.data.packing, cfg.train.length_buckets = False, 1
    assert planned_lengths(cfg, train, evaluated, sampler) == [256]


def test_label_budgets_are_the_most_labels_a_batch_at_each_length_holds():
    # batches at 32 hold 20 and 40 labels, at 64 hold 3: budgets 48 and 16 (multiples of 16), never above B * T
    assert plan_label_budgets([32, 64, 32], [20, 3, 40], rows=2) == {32: 48, 64: 16}
    assert plan_label_budgets([8], [15], rows=1) == {8: 8}
    assert plan_label_budgets([16], [0], rows=4) == {16: 16}


def test_gather_labels_keeps_each_labelled_position_and_pads_to_the_budget():
    ids = np.arange(12, dtype=np.int32).reshape(2, 6)
    labels = np.full((2, 6), -100, np.int32)
    labels[0, 2:4] = [7, 8]
    labels[1, 0] = 9
    positions = np.tile(np.arange(6, dtype=np.int32), (2, 1))
    out_ids, at, targets, out_positions = gather_labels((ids, labels, positions), {6: 4})
    assert out_ids is ids and out_positions is positions
    assert at.tolist() == [2, 3, 6, 0] and targets.tolist() == [7, 8, 9, -100]   # row 1, t 0 is flat index 6
    assert gather_labels((ids, labels), {6: 2})[1].shape == (12,)     # more labels than planned: every position
    assert gather_labels((ids, labels))[2].tolist() == [7, 8, 9] + [-100] * 9  # no plan: every position

