"""mindtune.models.lean_dense: which projections `apply_peft` gives the lean construct, and that the network has
MindFormers' and MindPet's values and gradients with it (full fine-tuning and LoRA). The LoRA scaling is also
checked by test_peft_lora's hand-computed 2x2 case, and a projection given a bias by test_peft_methods' bitfit."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "peft"))
from peft_helpers import SPEC, adapt, base_weights, batch  # noqa: E402

from mindtune.config.schema import PeftConfig  # noqa: E402
from mindtune.models import lean_dense  # noqa: E402

ALL = ["wq", "wk", "wv", "wo", "w1", "w2", "w3"]


def lean_cells(network) -> dict:
    kinds = {}
    for _, cell in network.cells_and_names():
        if getattr(vars(cell).get("construct"), "__func__", None) in (
                lean_dense._lean_linear, lean_dense._lean_linear_activated,
                lean_dense._lean_lora_dense, lean_dense._lean_lora_dense_activated):
            kinds[type(cell).__name__] = kinds.get(type(cell).__name__, 0) + 1
    return kinds


@pytest.fixture(scope="module")
def weights():
    return base_weights()


def test_the_build_and_lora_give_every_projection_the_lean_construct(weights):
    """Tiny Llama (2 layers): 7 projections a layer and the output head are Linear (w1 with the SiLU activation);
    LoRA on all 7 makes those 14 LoRADense, which get the lean construct too; a second call changes nothing."""
    from mindspore import nn

    lm, adapted = adapt(weights, PeftConfig(method="lora", rank=4, alpha=8, target_modules=ALL))
    assert lean_cells(adapted.network) == {"Linear": 1, "LoRADense": 7 * SPEC.num_layers}
    assert lean_dense.simplify(adapted.network) == 0
    # lora dropout 0 (the default): nn.Dropout would return its input; Identity does so without the branches
    dropouts = {type(cell.lora_dropout) for _, cell in lm.cells_and_names() if hasattr(cell, "lora_dropout")}
    assert dropouts == {nn.Identity}


@pytest.mark.parametrize("cfg, layer0_tensors", [
    (PeftConfig(method="none"), 9),
    (PeftConfig(method="lora", rank=4, alpha=8, target_modules=ALL), 9 + 2 * 7),
], ids=["full", "lora"])
def test_the_lean_network_has_the_upstream_values_and_gradients(weights, cfg, layer0_tensors):
    """The loss and the gradient of every tensor of layer 0 (LoRA: non-zero A and B in every layer) equal those of
    the same network with MindFormers' and MindPet's own construct put back."""
    import mindspore as ms

    from mindtune.engine.buckets import gather_labels
    from mindtune.engine.losses import CausalLMLoss

    results = []
    for lean in (True, False):
        # separate networks: MindSpore keeps a cell's compiled graph
        lm, adapted = adapt(weights, cfg)
        assert lean_cells(lm)
        if not lean:
            for _, cell in lm.cells_and_names():
                vars(cell).pop("construct", None)
            assert not lean_cells(lm)
        rng = np.random.default_rng(5)
        if cfg.method == "lora":
            for p in adapted.trainable:
                p.set_data(ms.Tensor(rng.normal(0, 0.1, p.shape).astype(np.float32)))
        loss_cell = CausalLMLoss(lm)
        params = [p for p in lm.get_parameters() if ".layers.0." in p.name]
        for p in params:
            p.requires_grad = True

        def loss(*b):
            return loss_cell(*b)[0]

        value, grads = ms.value_and_grad(loss, None, params)(*(ms.Tensor(x) for x in gather_labels(batch())))
        results.append((float(value.asnumpy()), {p.name: g.asnumpy() for p, g in zip(params, grads)}))
    (lean_loss, lean), (own_loss, own) = results
    assert len(own) == layer0_tensors and abs(lean_loss - own_loss) < 1e-5
    for name, want in own.items():
        assert np.abs(want).max() > 1e-5, name
        np.testing.assert_allclose(lean[name], want, rtol=1e-4, atol=1e-6, err_msg=name)


def test_a_cell_that_takes_a_branch_keeps_its_construct_and_the_adapter_input_passes_the_dropout():
    """A Linear with a bias is left alone; the lean LoRADense feeds its adapter through `lora_dropout`: with a
    dropout that zeroes everything the output is W x alone; a non-zero lora dropout stays nn.Dropout."""
    import mindspore as ms
    from mindformers.modules.layers import Linear
    from mindspore import nn

    from mindtune.device import resolve_profile, setup_context
    from mindtune.peft.lora import inject

    setup_context(resolve_profile("cpu"), graph_mode=True, seed=0)

    class Toy(nn.Cell):
        def __init__(self, has_bias):
            super().__init__()
            self.wq = Linear(2, 2, has_bias=has_bias, compute_dtype=ms.float32, param_init_type=ms.float32)

        def construct(self, x):
            return self.wq(x)

    assert lean_dense.simplify(Toy(has_bias=True)) == 0
    toy = Toy(has_bias=False)
    inject(toy, PeftConfig(method="lora", rank=2, alpha=2, target_modules=["wq"]))
    assert lean_dense.simplify(toy) == 1
    for p in toy.get_parameters():
        p.set_data(ms.Tensor(np.arange(1, 5, dtype=np.float32).reshape(p.shape)))    # W = A = B = [[1, 2], [3, 4]]

    class Zero(nn.Cell):
        def construct(self, x):
            return x * 0

    toy.wq.lora_dropout = Zero()
    x = np.array([[1, 2]], np.float32)
    np.testing.assert_allclose(toy(ms.Tensor(x)).asnumpy(), x @ np.array([[1, 2], [3, 4]]).T)

    dropping = Toy(has_bias=False)
    inject(dropping, PeftConfig(method="lora", rank=2, alpha=2, dropout=0.5, target_modules=["wq"]))
    assert lean_dense.simplify(dropping) == 1 and type(dropping.wq.lora_dropout) is nn.Dropout
