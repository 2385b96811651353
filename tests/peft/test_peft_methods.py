"""Every PEFT method on a tiny Llama, trained by the project's Trainer on one fixed batch: the frozen weights stay
bit-identical, every trainable tensor moves, the loss falls; the adapter is small, reloads onto a fresh base
model to the same loss, and an interrupted run resumes to the same tensors."""
import os

import numpy as np
import pytest

from peft_helpers import SPEC, adapt, base_weights, batch, loss_of, trainer

from mindtune.config.schema import PeftConfig

# case -> (PeftConfig keys, learning rate)
CASES = {
    "lora": (dict(method="lora", rank=4, alpha=8, target_modules=["wq", "wv", "w2"]), 1e-2),
    "prefix": (dict(method="prefix", num_virtual_tokens=4, encoder_hidden_size=32), 3e-3),
    "ptuning_lstm": (dict(method="ptuning", num_virtual_tokens=4, encoder="lstm", encoder_hidden_size=16), 3e-3),
    "ptuning_v2": (dict(method="ptuning_v2", num_virtual_tokens=4), 5e-2),
    "prompt": (dict(method="prompt", num_virtual_tokens=4, prompt_init="vocab"), 5e-2),
    "adapter": (dict(method="adapter", adapter_size=8), 1e-2),
    "bitfit": (dict(method="bitfit"), 5e-2),
}
STEPS, SAVE_EVERY = 8, 4


@pytest.fixture(scope="module")
def weights():
    return base_weights()


@pytest.fixture(scope="module", params=list(CASES))
def trained(request, weights, tmp_path_factory):
    from mindtune import peft
    from mindtune.models.build import get_weights

    keys, lr = CASES[request.param]
    cfg = PeftConfig(**keys)
    lm, adapted = adapt(weights, cfg, seed=1)
    data = batch(0)
    start = {p.name: p.asnumpy().copy() for p in adapted.trainable}
    loss_before = loss_of(adapted, data)
    run_dir = str(tmp_path_factory.mktemp(request.param))
    trainer(adapted, run_dir, data, STEPS, lr, save_every=SAVE_EVERY).fit()
    return dict(name=request.param, cfg=cfg, lr=lr, lm=lm, adapted=adapted, data=data, start=start,
                loss_before=loss_before, loss_after=loss_of(adapted, data), run_dir=run_dir,
                after=get_weights(lm), export=peft.adapter_weights(adapted))


def test_frozen_weights_unchanged_trainable_changed_loss_falls(trained, weights):
    from mindtune.peft import count_parameters

    for name, value in weights.items():   # the base model, bit for bit
        assert np.array_equal(trained["after"][name], value), f"frozen {name} changed"
    adapted = trained["adapted"]
    for param in adapted.trainable:
        assert param.name not in weights
        moved = np.abs(param.asnumpy() - trained["start"][param.name]).max()
        assert moved > 0, f"trainable {param.name} did not change"
    assert trained["loss_after"] < trained["loss_before"] - 0.05, (trained["loss_before"], trained["loss_after"])
    n_trainable, total = count_parameters(adapted)
    assert n_trainable == sum(p.size for p in adapted.trainable) > 0
    index = trained["cfg"].num_virtual_tokens if trained["cfg"].method == "ptuning_v2" else 0  # MindPet's arange
    assert total == SPEC.num_parameters() + n_trainable + index


def test_adapter_is_small_and_reloads_to_the_same_loss(trained, weights, tmp_path):
    """Save the adapter directory, read it back, apply it to a freshly built base model: same loss."""
    from mindtune.models.model_dir import read_model_dir, write_model_dir

    export = trained["export"]
    path = write_model_dir(str(tmp_path / "adapter"), SPEC, export, {"base_model": "tiny", "base_seed": 0},
                           adapter=True)
    size = os.path.getsize(os.path.join(path, "adapter.safetensors"))
    base_bytes = sum(v.nbytes for v in weights.values())
    assert size < base_bytes / 4, (size, base_bytes)
    saved = read_model_dir(path).weights()
    _, reloaded = adapt(weights, trained["cfg"], seed=99, saved=saved)   # another seed: values come from the file
    loss = loss_of(reloaded, trained["data"])
    assert abs(loss - trained["loss_after"]) <= 1e-5 * abs(trained["loss_after"]), (loss, trained["loss_after"])
    # the reload is not vacuous: the untrained method gives a different loss
    assert abs(trained["loss_before"] - trained["loss_after"]) > 1e-3


def test_checkpoint_loads_onto_a_rebuilt_method(trained, weights):
    """A resumed run rebuilds the method from scratch: its trainable tensors must take the checkpoint's values
    by name (stable names, same shapes)."""
    _, fresh = adapt(weights, trained["cfg"], seed=5)
    step, _ = trainer(fresh, trained["run_dir"], trained["data"], STEPS, trained["lr"]).resume()
    assert step == STEPS
    done = {p.name: p.asnumpy() for p in trained["adapted"].trainable}
    assert sorted(done) == sorted(p.name for p in fresh.trainable)
    for param in fresh.trainable:
        np.testing.assert_array_equal(param.asnumpy(), done[param.name], err_msg=param.name)


def test_interrupted_prefix_run_resumes_to_the_same_tensors(weights, tmp_path):
    """Prefix tuning (reparameterisation MLP): train 8 steps, and separately 4 + resume + 4; same result."""
    keys, lr = CASES["prefix"]
    cfg, data = PeftConfig(**keys), batch(0)
    _, full = adapt(weights, cfg, seed=1)
    trainer(full, str(tmp_path / "full"), data, STEPS, lr).fit()
    _, first = adapt(weights, cfg, seed=1)
    trainer(first, str(tmp_path / "split"), data, SAVE_EVERY, lr).fit()
    _, second = adapt(weights, cfg, seed=7)   # different init: everything must come from the checkpoint
    summary = trainer(second, str(tmp_path / "split"), data, STEPS, lr).fit()
    assert summary["resumed_from"] == SAVE_EVERY
    done = {p.name: p.asnumpy() for p in full.trainable}
    for param in second.trainable:
        np.testing.assert_allclose(param.asnumpy(), done[param.name], rtol=1e-5, atol=1e-6, err_msg=param.name)
