"""LoRA: an untrained adapter is the base model; the scaling on a hand-computed 2x2 case (plain and rsLoRA);
`mindtune merge-lora` writes a plain model directory whose logits equal the adapted model's."""
import os

import numpy as np
import pytest

from peft_helpers import SPEC, adapt, base_weights, build_lm, rel_err

from mindtune.config.schema import PeftConfig

ALL = ["wq", "wk", "wv", "wo", "w1", "w2", "w3"]


@pytest.fixture(scope="module")
def weights():
    return base_weights()


def _ids():
    return np.random.default_rng(1).integers(3, SPEC.vocab_size, (2, 12)).astype(np.int32)


def test_untrained_lora_equals_the_base_model(weights):
    import mindspore as ms

    from mindtune.peft import apply_peft

    ids = ms.Tensor(_ids())
    base = build_lm(weights)(ids)[0].asnumpy()
    # a separate network: MindSpore caches a cell's compiled graph, so a network called before LoRA is injected
    # would keep running the old graph
    adapted = apply_peft(build_lm(weights), PeftConfig(method="lora", rank=4, alpha=8, target_modules=ALL), SPEC)
    assert len(adapted.trainable) == 2 * 7 * SPEC.num_layers
    assert rel_err(adapted.network(ids)[0].asnumpy(), base) < 1e-6
    # the check can fail: a non-zero B moves the logits
    b = next(p for p in adapted.trainable if p.name.endswith("lora_b"))
    b.set_data(ms.Tensor(np.full(b.shape, 0.5, np.float32)))
    assert rel_err(adapted.network(ids)[0].asnumpy(), base) > 1e-3


@pytest.mark.parametrize("lean", [False, True])
@pytest.mark.parametrize("rslora, expected", [(False, [3.0, 10.5]), (True, [1.0, 10.0])])
def test_lora_scaling_on_a_hand_computed_2x2_case(rslora, expected, lean):
    """W = [[1, 2], [3, 4]], x = [1, 2], rank 4, alpha 4, A's first row [1, -1], B's first column [2, 0.5]:
    W x = [5, 11], B A x = [-2, -0.5]; alpha/r = 1 gives [3, 10.5]; rsLoRA alpha/sqrt(r) = 2 gives [1, 10].
    Both with MindPet's LoRADense construct and with mindtune's lean one (`apply_peft` gives it)."""
    import mindspore as ms
    from mindformers.modules.layers import Linear
    from mindspore import nn

    from mindtune.device import resolve_profile, setup_context
    from mindtune.peft.lora import LORA_A, LORA_B, inject, merge_arrays, scaling

    setup_context(resolve_profile("cpu"), graph_mode=True, seed=0)

    class Toy(nn.Cell):
        def __init__(self):
            super().__init__()
            self.wq = Linear(2, 2, has_bias=False, compute_dtype=ms.float32, param_init_type=ms.float32)

        def construct(self, x):
            return self.wq(x)

    cfg = PeftConfig(method="lora", rank=4, alpha=4, rslora=rslora, target_modules=["wq"])
    assert scaling(cfg) == (2.0 if rslora else 1.0)
    toy = Toy()
    inject(toy, cfg)
    if lean:
        from mindtune.models import lean_dense
        assert lean_dense.simplify(toy) == 1
    w = np.array([[1, 2], [3, 4]], np.float32)
    a = np.zeros((4, 2), np.float32)
    a[0] = [1, -1]
    b = np.zeros((2, 4), np.float32)
    b[:, 0] = [2, 0.5]
    params = {p.name: p for p in toy.get_parameters()}
    assert sorted(params) == sorted(["wq.weight", "wq." + LORA_A, "wq." + LORA_B])
    for name, value in (("wq.weight", w), ("wq." + LORA_A, a), ("wq." + LORA_B, b)):
        params[name].set_data(ms.Tensor(value))
    y = toy(ms.Tensor(np.array([[1, 2]], np.float32))).asnumpy()[0]
    np.testing.assert_allclose(y, expected, rtol=1e-6)
    merged = merge_arrays({"wq.weight": w}, {"wq." + LORA_A: a, "wq." + LORA_B: b}, cfg)["wq.weight"]
    np.testing.assert_allclose(merged @ np.array([1, 2]), expected, rtol=1e-6)


def test_merge_lora_command_matches_the_adapted_model(weights, tmp_path, capsys):
    """Adapter directory (rsLoRA, non-zero B) -> `mindtune merge-lora` -> plain model directory whose logits equal
    the adapted model's within 1e-5; the merged directory is a normal model `resolve_model` reads."""
    import mindspore as ms

    from mindtune import cli
    from mindtune.models.loading import resolve_model
    from mindtune.models.model_dir import write_model_dir
    from mindtune.peft import adapter_weights

    base_dir = write_model_dir(str(tmp_path / "base"), SPEC, weights, {},
                               tokenizer_dir=os.path.join(os.path.dirname(cli.__file__), "assets", "tiny_tokenizer"))
    cfg = PeftConfig(method="lora", rank=4, alpha=8, rslora=True, target_modules=ALL)
    _, adapted = adapt(weights, cfg)
    rng = np.random.default_rng(0)
    for p in adapted.trainable:   # stand-in for training: both factors non-zero
        p.set_data(ms.Tensor((rng.standard_normal(p.shape) * 0.3).astype(np.float32)))
    import dataclasses
    adapter_dir = write_model_dir(str(tmp_path / "run" / "model"), SPEC, adapter_weights(adapted),
                                  {"base_model": base_dir, "base_seed": 0, "peft": dataclasses.asdict(cfg)},
                                  adapter=True)
    ids = ms.Tensor(_ids())
    expected = adapted.network(ids)[0].asnumpy()

    assert cli.main(["merge-lora", str(tmp_path / "run"), str(tmp_path / "merged")]) == 0   # a run directory
    merged = resolve_model(str(tmp_path / "merged"))
    assert not merged.model_dir.is_adapter and merged.tokenizer is not None
    merged_weights = merged.base_weights(0)
    assert sorted(merged_weights) == sorted(weights)
    lm = build_lm(merged_weights)
    got = lm(ids)[0].asnumpy()
    assert rel_err(got, expected) <= 1e-5
    base = build_lm(weights)(ids)[0].asnumpy()
    assert rel_err(base, expected) > 1e-2        # the adapter matters, so the comparison can fail
    assert cli.main(["merge-lora", "--adapter", adapter_dir, "--output", str(tmp_path / "merged2")]) == 0


def test_merge_lora_refuses_what_it_cannot_fold(tmp_path, capsys):
    import dataclasses

    from mindtune import cli
    from mindtune.models.model_dir import write_model_dir

    cfg = PeftConfig(method="prompt", num_virtual_tokens=2)
    path = write_model_dir(str(tmp_path / "prompt"), SPEC,
                           {"peft.prompt_embeddings": np.zeros((2, SPEC.hidden_size), np.float32)},
                           {"base_model": "tiny", "base_seed": 0, "peft": dataclasses.asdict(cfg)}, adapter=True)
    assert cli.main(["merge-lora", path, str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "'prompt' adapter does not fold" in err and len(err.strip().splitlines()) == 1
    assert cli.main(["merge-lora", str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    assert "not found" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "out")
