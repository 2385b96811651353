"""Length buckets: which lengths, where a batch is cut, and that the cut leaves every token's loss unchanged."""
import numpy as np
import pytest

from mindtune.engine.buckets import bucket_lengths, longest_row, trim_batch

PAD = 0


def test_bucket_lengths():
    assert bucket_lengths(512, 4) == [64, 128, 256, 512]
    assert bucket_lengths(100, 3) == [32, 56, 100]      # halves rounded up to multiples of 8
    assert bucket_lengths(64, 1) == [64]
    assert bucket_lengths(32, 8) == [16, 32]            # never below 16, no duplicates


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
    padded = cell(ms.Tensor(ids), ms.Tensor(labels))
    short_ids, short_labels = trim_batch((ids, labels), PAD, [16, 32])
    assert short_ids.shape == (2, 16)
    short = cell(ms.Tensor(short_ids), ms.Tensor(short_labels))
    assert float(short[1][0].asnumpy()) == float(padded[1][0].asnumpy()) == 13
    assert float(short[0].asnumpy()) == pytest.approx(float(padded[0].asnumpy()), rel=1e-5)
