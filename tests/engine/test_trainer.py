"""The engine on a toy loss (it serves any model and loss): gradient accumulation equals the larger batch."""
import numpy as np
import pytest


@pytest.fixture(scope="module")
def toy_setup():
    import mindspore as ms
    from mindspore import nn, ops

    from mindtune.device import resolve_profile, setup_context

    profile = resolve_profile()
    setup_context(profile, graph_mode=True, seed=0)

    class Toy(nn.Cell):
        """Least squares: loss = mean((x w - y)^2); aux = the batch's row count."""

        def __init__(self):
            super().__init__()
            self.w = ms.Parameter(ms.Tensor(np.array([0.5, -0.25, 1.0], np.float32)), name="toy.w")

        def construct(self, x, y):
            err = ops.matmul(x, self.w) - y
            return (err * err).mean(), (ops.ones((), ms.float32) * x.shape[0],)

    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 3)).astype(np.float32)
    y = (x @ np.array([1.0, 2.0, -1.0], np.float32) + 0.1).astype(np.float32)
    return profile, Toy, x, y


def train(toy_setup, tmp_path, batch, accum, steps=6):
    from mindtune.config import load_config
    from mindtune.engine.metrics import read_metrics
    from mindtune.engine.trainer import Trainer, TrainTask

    profile, Toy, x, y = toy_setup
    cfg = load_config(None, [f"train.batch_size={batch}", f"train.grad_accum={accum}", f"train.max_steps={steps}",
                             "train.lr=0.05", "train.schedule=constant", "train.max_grad_norm=0"])
    cell = Toy()

    def micro_batch(k):
        rows = slice(k * batch, (k + 1) * batch)
        return x[rows], y[rows]

    tmp_path.mkdir(parents=True, exist_ok=True)
    task = TrainTask(cell, ("rows",), [cell.w], micro_batch)
    Trainer(cfg, str(tmp_path), task, profile).fit()
    return cell.w.asnumpy(), read_metrics(str(tmp_path / "metrics.jsonl"))


def test_gradient_accumulation_equals_the_larger_batch(toy_setup, tmp_path):
    w_accum, m_accum = train(toy_setup, tmp_path / "accum", batch=2, accum=4)
    w_big, m_big = train(toy_setup, tmp_path / "big", batch=8, accum=1)
    np.testing.assert_allclose(w_accum, w_big, rtol=1e-5, atol=1e-6)
    for a, b in zip(m_accum, m_big):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)
    assert m_accum[-1]["loss"] < m_accum[0]["loss"]          # and it does descend
    assert m_accum[0]["rows"] == 2 and m_big[0]["rows"] == 8  # aux metrics are per micro-batch means


def test_first_adam_step_moves_each_weight_by_the_learning_rate(toy_setup, tmp_path):
    """Bias-corrected AdamW: the first update is lr * sign(grad) (|m_hat / sqrt(v_hat)| = 1)."""
    profile, Toy, x, y = toy_setup
    w0 = Toy().w.asnumpy()
    w1, _ = train(toy_setup, tmp_path / "one", batch=8, accum=1, steps=1)
    np.testing.assert_allclose(np.abs(w1 - w0), 0.05, rtol=1e-4)


def test_clipping_scales_gradients_to_the_global_norm(toy_setup):
    import mindspore as ms

    from mindtune.engine.optim import unscale_and_clip

    @ms.jit
    def clip(grads, inv_scale):
        return unscale_and_clip(grads, inv_scale, ms.Tensor(1.0, ms.float32), True)

    grads = (ms.Tensor(np.array([3.0, 0.0, 4.0], np.float32)),)   # norm 5
    clipped, finite, norm = clip(ms.mutable(grads), ms.Tensor(0.5, ms.float32))
    assert bool(finite.asnumpy()) and float(norm.asnumpy()) == pytest.approx(2.5)  # unscaled by 0.5 first
    np.testing.assert_allclose(clipped[0].asnumpy(), np.array([0.6, 0.0, 0.8]) / (1 + 4e-7), rtol=1e-5)
    bad = (ms.Tensor(np.array([np.inf, 0.0, 1.0], np.float32)),)
    _, finite, _ = clip(ms.mutable(bad), ms.Tensor(1.0, ms.float32))
    assert not bool(finite.asnumpy())


def test_global_norm_and_finiteness_over_tensors_of_every_rank(toy_setup):
    import mindspore as ms

    from mindtune.engine.optim import unscale_and_clip

    @ms.jit
    def norm_only(grads):   # neither unscaled nor clipped: the gradients come back as they went in
        return unscale_and_clip(grads, ms.Tensor(1.0, ms.float32), ms.Tensor(1.0, ms.float32), False, False)

    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal(shape).astype(np.float32) for shape in ((), (5,), (4, 3), (2, 3, 4))]
    grads, finite, norm = norm_only(ms.mutable(tuple(ms.Tensor(a) for a in arrays)))
    expected = np.sqrt(sum(float((a.astype(np.float64) ** 2).sum()) for a in arrays))
    assert bool(finite.asnumpy()) and float(norm.asnumpy()) == pytest.approx(expected, rel=1e-6)
    for got, want in zip(grads, arrays):
        np.testing.assert_array_equal(got.asnumpy(), want)
    for bad in (np.inf, -np.inf, np.nan):
        broken = [a.copy() for a in arrays]
        broken[3][1, 2, 0] = bad
        _, finite, _ = norm_only(ms.mutable(tuple(ms.Tensor(a) for a in broken)))
        assert not bool(finite.asnumpy()), bad


def test_the_update_graph_skips_a_non_finite_step_and_applies_a_finite_one(toy_setup, tmp_path):
    """The overflow skip is decided inside the compiled update: weights, moments and step count stay as they were."""
    import mindspore as ms

    from mindtune.config import load_config
    from mindtune.engine.trainer import Trainer, TrainTask

    profile, Toy, x, y = toy_setup
    cell = Toy()
    cfg = load_config(None, ["train.lr=0.05"])
    tmp_path.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, str(tmp_path), TrainTask(cell, ("rows",), [cell.w], lambda k: (x, y)), profile)
    before = {name: value.copy() for name, value in trainer.state_tensors().items()}   # asnumpy may share memory
    one, lr = ms.Tensor(1.0, ms.float32), ms.Tensor(0.05, ms.float32)
    bad = (ms.Tensor(np.array([np.nan, 1.0, -1.0], np.float32)),)
    finite, _ = trainer._update(ms.mutable(bad), one, one, lr)
    assert not bool(finite.asnumpy())
    after = trainer.state_tensors()
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)
    good = (ms.Tensor(np.array([1.0, -1.0, 0.0], np.float32)),)
    finite, norm = trainer._update(ms.mutable(good), one, ms.Tensor(10.0, ms.float32), lr)
    assert bool(finite.asnumpy()) and float(norm.asnumpy()) == pytest.approx(np.sqrt(2))
    # the first AdamW step moves a weight by lr * sign(grad) (and not at all where the gradient is 0)
    np.testing.assert_allclose(cell.w.asnumpy() - before["toy.w"], [-0.05, 0.05, 0.0], atol=1e-6)
    assert int(trainer.state_tensors()["optimizer/global_step"]) == int(before["optimizer/global_step"]) + 1


def test_without_accumulation_one_graph_runs_the_step_and_skips_a_non_finite_one(toy_setup, tmp_path):
    """grad_accum 1: forward, backward and update are the train_step graph alone (the two-graph path is never
    called), and a batch whose gradient is not finite leaves weights and optimizer state as they were, so
    steps [a, NaN, b] end where steps [a, b] do."""
    from mindtune.config import load_config
    from mindtune.engine.metrics import read_metrics
    from mindtune.engine.trainer import Trainer, TrainTask

    profile, Toy, x, y = toy_setup
    bad = x[:4].copy()
    bad[1, 2] = np.nan

    def fit(batches, where):
        cfg = load_config(None, [f"train.max_steps={len(batches)}", "train.lr=0.05", "train.schedule=constant",
                                 "train.max_grad_norm=0"])
        cell = Toy()
        where.mkdir(parents=True, exist_ok=True)
        trainer = Trainer(cfg, str(where), TrainTask(cell, ("rows",), [cell.w], lambda k: batches[k]), profile)

        def two_graph_path(*args):
            raise AssertionError("the two-graph path ran without gradient accumulation")
        trainer._forward_backward = trainer._update = two_graph_path
        trainer.fit()
        return cell.w.asnumpy(), trainer.state_tensors(), read_metrics(str(where / "metrics.jsonl"))

    a, b = (x[:4], y[:4]), (x[4:8], y[4:8])
    w_skip, state_skip, rows = fit([a, (bad, y[:4]), b], tmp_path / "skip")
    w_plain, state_plain, _ = fit([a, b], tmp_path / "plain")
    assert [r["skipped"] for r in rows] == [False, True, False]
    np.testing.assert_array_equal(w_skip, w_plain)
    for name in ("optimizer/global_step", "optimizer/adam_m.toy.w", "optimizer/adam_v.toy.w"):
        np.testing.assert_array_equal(state_skip[name], state_plain[name], err_msg=name)
    assert not np.allclose(w_plain, Toy().w.asnumpy())          # and the finite steps did move the weights


@pytest.fixture(scope="module")
def masked_setup(toy_setup):
    """A per-token loss: rows of 8 positions whose label masks hold very unequal numbers of tokens."""
    import mindspore as ms
    from mindspore import nn, ops

    class MaskedToy(nn.Cell):
        """loss = sum(mask * (x w - y)^2) / sum(mask): a mean over the micro-batch's label tokens, as SFT's."""

        def __init__(self):
            super().__init__()
            self.w = ms.Parameter(ms.Tensor(np.array([0.5, -0.25, 1.0], np.float32)), name="toy.w")

        def construct(self, x, y, mask):
            err = ops.matmul(x, self.w) - y
            return (mask * err * err).sum() / mask.sum(), (mask.sum(),)

    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 8, 3)).astype(np.float32)
    y = (x @ np.array([1.0, 2.0, -1.0], np.float32) + 0.3).astype(np.float32)
    counts = [1, 2, 8, 7] * 4              # each 2-row micro-batch holds 3 or 15 label tokens
    mask = (np.arange(8)[None, :] < np.array(counts)[:, None]).astype(np.float32)
    return toy_setup[0], MaskedToy, x, y, mask


def train_masked(masked_setup, tmp_path, batch, accum, steps=4, weighted=True):
    from mindtune.config import load_config
    from mindtune.engine.metrics import read_metrics
    from mindtune.engine.trainer import Trainer, TrainTask

    profile, MaskedToy, x, y, mask = masked_setup
    cfg = load_config(None, [f"train.batch_size={batch}", f"train.grad_accum={accum}", f"train.max_steps={steps}",
                             "train.lr=0.05", "train.schedule=constant", "train.max_grad_norm=0"])
    cell = MaskedToy()

    def micro_batch(k):
        rows = [(k * batch + i) % len(x) for i in range(batch)]
        return x[rows], y[rows], mask[rows]

    tmp_path.mkdir(parents=True, exist_ok=True)
    task = TrainTask(cell, ("label_tokens",), [cell.w], micro_batch,
                     loss_tokens=(lambda b: float(b[2].sum())) if weighted else None)
    Trainer(cfg, str(tmp_path), task, profile).fit()
    return cell.w.asnumpy(), read_metrics(str(tmp_path / "metrics.jsonl"))


def test_accumulation_weights_micro_batches_by_their_label_tokens(masked_setup, tmp_path):
    """Batch 4 x accumulation 1 == batch 2 x accumulation 2 when the micro-batches hold 3 and 15 label tokens:
    the step's loss and gradient are the sum over all label tokens divided by their number (not a mean of
    micro-batch means, which would weight a token of the short micro-batch 5x)."""
    w_big, m_big = train_masked(masked_setup, tmp_path / "big", batch=4, accum=1)
    w_acc, m_acc = train_masked(masked_setup, tmp_path / "accum", batch=2, accum=2)
    assert len(m_big) == len(m_acc) == 4
    for a, b in zip(m_acc, m_big):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5), (a["step"], a["loss"], b["loss"])
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5), (a["step"], a["grad_norm"], b["grad_norm"])
    np.testing.assert_allclose(w_acc, w_big, rtol=1e-5, atol=1e-6)
    # the exact token mean, computed here in numpy for the first step (weights before any update)
    _, MaskedToy, x, y, mask = masked_setup
    err = x[:4] @ MaskedToy().w.asnumpy() - y[:4]
    assert m_big[0]["loss"] == pytest.approx(float((mask[:4] * err ** 2).sum() / mask[:4].sum()), rel=1e-5)
    # and the unweighted mean of micro-batch means is measurably different on these rows
    _, m_plain = train_masked(masked_setup, tmp_path / "plain", batch=2, accum=2, steps=1, weighted=False)
    assert abs(m_plain[0]["loss"] - m_big[0]["loss"]) > 1e-2 * m_big[0]["loss"]


def test_each_new_batch_shape_is_announced_once_and_not_timed(toy_setup, tmp_path, capsys):
    """Length buckets give batches of several shapes; each compiles once and the terminal says so."""
    from mindtune.config import load_config
    from mindtune.engine.trainer import Trainer, TrainTask

    profile, Toy, x, y = toy_setup
    cfg = load_config(None, ["train.max_steps=5", "train.schedule=constant"])
    cell = Toy()
    sizes = [4, 2, 4, 2, 4]          # steps 1 and 2 compile; 3, 4, 5 are timed
    tmp_path.mkdir(parents=True, exist_ok=True)
    task = TrainTask(cell, ("rows",), [cell.w], lambda k: (x[:sizes[k]], y[:sizes[k]]))
    Trainer(cfg, str(tmp_path), task, profile).fit()
    said = [line for line in capsys.readouterr().err.splitlines() if "compiling" in line]
    assert said == ["train: compiling the training step for batches of 4x3 (once per shape; about half a minute "
                    "for a 30-layer model on CPU)",
                    "train: compiling the training step for batches of 2x3 (once per shape; about half a minute "
                    "for a 30-layer model on CPU)"]
