"""mindtune.engine.optim.FusedAdamW: torch.optim.AdamW's update (checked against numpy in float64) with
MindFormers' AdamW state names, on parameter groups with and without weight decay."""
import numpy as np
import pytest

LR, BETAS, EPS = 1e-2, (0.9, 0.999), 1e-8


def numpy_adamw(init, grads, decays):
    """torch.optim.AdamW, written out: decoupled decay, then the bias-corrected Adam step."""
    params = [x.astype(np.float64) for x in init]
    m = [np.zeros_like(x) for x in params]
    v = [np.zeros_like(x) for x in params]
    for t, step_grads in enumerate(grads, 1):
        for i, (g, wd) in enumerate(zip(step_grads, decays)):
            params[i] = params[i] * (1 - LR * wd)
            m[i] = BETAS[0] * m[i] + (1 - BETAS[0]) * g
            v[i] = BETAS[1] * v[i] + (1 - BETAS[1]) * g.astype(np.float64) ** 2
            m_hat, v_hat = m[i] / (1 - BETAS[0] ** t), v[i] / (1 - BETAS[1] ** t)
            params[i] = params[i] - LR * m_hat / (np.sqrt(v_hat) + EPS)
    return params


@pytest.mark.parametrize("grouped", [True, False])
def test_fused_adamw_matches_torch_adamw_and_keeps_mindformers_state_names(grouped):
    import mindspore as ms

    from mindtune.device import resolve_profile, setup_context
    from mindtune.engine.optim import FusedAdamW

    setup_context(resolve_profile("cpu"))
    rng = np.random.RandomState(0)
    init = [rng.randn(50, 7).astype(np.float32), rng.randn(13).astype(np.float32)]
    grads = [[rng.randn(*x.shape).astype(np.float32) for x in init] for _ in range(20)]
    params = [ms.Parameter(ms.Tensor(x.copy()), name=f"w{i}") for i, x in enumerate(init)]
    if grouped:
        decays = (0.1, 0.0)
        groups = [{"params": [params[0]], "weight_decay": 0.1}, {"params": [params[1]], "weight_decay": 0.0}]
        optimizer = FusedAdamW(groups, learning_rate=ms.Tensor(LR, ms.float32), betas=BETAS, eps=EPS)
    else:
        decays = (0.05, 0.05)
        optimizer = FusedAdamW(params, learning_rate=ms.Tensor(LR, ms.float32), betas=BETAS, eps=EPS,
                               weight_decay=0.05)

    @ms.jit
    def step(gradients):
        return optimizer(gradients)

    for step_grads in grads:
        step(ms.mutable(tuple(ms.Tensor(g) for g in step_grads)))
    want = numpy_adamw(init, grads, decays)
    for param, expected, start in zip(params, want, init):
        assert np.abs(expected - start).max() > 0.05                     # the parameters moved
        np.testing.assert_allclose(param.asnumpy(), expected, rtol=0, atol=2e-6)
    names = sorted(p.name for p in optimizer.get_parameters())
    assert names == ["adam_m.w0", "adam_m.w1", "adam_v.w0", "adam_v.w1", "global_step", "learning_rate", "w0", "w1"]


def test_fused_adamw_with_lr_zero_leaves_weights_unchanged_and_finite():
    """lr 0 (the first step of a warm-up, or a run that only measures): no update, and no 0/0 in the decay."""
    import mindspore as ms

    from mindtune.device import resolve_profile, setup_context
    from mindtune.engine.optim import FusedAdamW

    setup_context(resolve_profile("cpu"))
    start = np.random.RandomState(1).randn(4, 3).astype(np.float32)
    param = ms.Parameter(ms.Tensor(start.copy()), name="w")
    optimizer = FusedAdamW([{"params": [param], "weight_decay": 0.1}], learning_rate=ms.Tensor(0.0, ms.float32),
                           betas=BETAS, eps=EPS)

    @ms.jit
    def step(gradients):
        return optimizer(gradients)

    step(ms.mutable((ms.Tensor(np.ones((4, 3), np.float32)),)))
    assert np.array_equal(param.asnumpy(), start)


def test_fused_adamw_refuses_per_group_learning_rates():
    """MindFormers' AdamW would honour a group's own lr; the fused step does not, so it says so at build."""
    import mindspore as ms

    from mindtune.device import resolve_profile, setup_context
    from mindtune.engine.optim import FusedAdamW

    setup_context(resolve_profile("cpu"))
    param = ms.Parameter(ms.Tensor(np.zeros((2, 2), np.float32)), name="w")
    with pytest.raises(ValueError, match="^FusedAdamW supports neither per-group learning rates"):
        FusedAdamW([{"params": [param], "lr": 0.5}], learning_rate=ms.Tensor(0.1, ms.float32), betas=BETAS, eps=EPS)
