"""mindtune.engine.cell_reuse: the decoder layers compiled once for all train to the same losses and tensors as
layers compiled one by one, for every PEFT method; layers that differ get different keys; and the key sees what
the parser would bake into a shared graph."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "peft"))
from peft_helpers import adapt, base_weights, batch, trainer  # noqa: E402

from mindtune.config.schema import PeftConfig  # noqa: E402
from mindtune.engine import cell_reuse  # noqa: E402
from mindtune.engine.metrics import read_metrics  # noqa: E402

STEPS = 3

CASES = {
    "full": dict(method="none"),
    "lora": dict(method="lora", rank=4, alpha=8, target_modules=["wq", "wv", "w2"]),
    "prefix": dict(method="prefix", num_virtual_tokens=4, encoder_hidden_size=32),
    "ptuning": dict(method="ptuning", num_virtual_tokens=4, encoder="mlp", encoder_hidden_size=16),
    "ptuning_v2": dict(method="ptuning_v2", num_virtual_tokens=4),
    "prompt": dict(method="prompt", num_virtual_tokens=4, prompt_init="vocab"),
    "adapter": dict(method="adapter", adapter_size=8),
    "bitfit": dict(method="bitfit"),
    # layer 1's wq with twice the LoRA scaling: the layers differ in a Python number their construct reads
    "lora_differing": dict(method="lora", rank=4, alpha=8, target_modules=["wq"]),
}


def differing(layers):
    layers[1].attention.wq.scaling = 2 * layers[1].attention.wq.scaling


@pytest.fixture(scope="module")
def weights():
    return base_weights()


def train(weights, keys: dict, reuse: bool, run_dir: str):
    """STEPS optimizer steps of the engine's one-graph train step on a fixed batch: (losses, trained tensors,
    the layers' reuse keys)."""
    lm, adapted = adapt(weights, PeftConfig(**keys), seed=1)
    layers = lm.llama.model.layers
    if keys is CASES["lora_differing"]:
        differing(layers)
    if not reuse:
        for layer in layers:
            vars(layer).pop(cell_reuse._MARK)
    # no compile cache: each network compiles its own graphs
    trainer(adapted, run_dir, batch(0), STEPS, 1e-2, max_grad_norm=1.0, compile_cache=False).fit()
    losses = [row["loss"] for row in read_metrics(os.path.join(run_dir, "metrics.jsonl")) if "loss" in row]
    tensors = {p.name: p.asnumpy().copy() for p in adapted.trainable}
    return losses, tensors, [getattr(layer, "cell_init_args", None) for layer in layers]


@pytest.mark.parametrize("case", list(CASES))
def test_layers_compiled_once_train_as_layers_compiled_one_by_one(weights, case, tmp_path):
    """Both layers of the tiny model (different weights) share one key, or, when layer 1's LoRA scaling differs,
    each has its own; three AdamW steps (forward, backward and update in one graph) give the same losses and the
    same trained tensors as the same network without reuse."""
    shared_losses, shared, keys = train(weights, CASES[case], True, str(tmp_path / "shared"))
    own_losses, own, no_keys = train(weights, CASES[case], False, str(tmp_path / "own"))
    assert no_keys == [None, None]
    assert all(k is not None and k.startswith("lazy_inline_mindtune_") for k in keys)
    assert (keys[0] == keys[1]) == (case != "lora_differing")
    assert len(shared_losses) == STEPS and shared_losses[-1] < shared_losses[0]
    np.testing.assert_allclose(shared_losses, own_losses, rtol=1e-5)
    assert shared.keys() == own.keys()
    for name, want in own.items():
        np.testing.assert_allclose(shared[name], want, rtol=1e-4, atol=1e-6, err_msg=name)


def test_the_key_sees_what_a_shared_graph_would_bake_in():
    """Cells equal but for parameter values, names and MindSpore's bookkeeping share a key; a different number,
    primitive attribute, constant tensor, parameter shape or requires_grad, an ignored attribute's absence, or an
    unknown object each give a different one."""
    from mindspore import Parameter, Tensor, nn, ops

    class Layer(nn.Cell):
        def __init__(self, index, width=4, transpose=True, scale=0.5, frozen=False):
            super().__init__()
            self.layer_id = index
            self.scale = Tensor(np.float32(scale))
            self.width = width
            self.matmul = ops.MatMul(transpose_b=transpose)
            self.weight = Parameter(Tensor(np.full((width, width), index, np.float32)), name=f"w{index}",
                                    requires_grad=not frozen)
            self.norm = nn.Dense(width, width)

        def construct(self, x):
            return self.norm(self.matmul(x, self.weight)) * self.scale

    def key(cell):
        return cell_reuse.cell_key(cell, ignore=("layer_id",))

    base = Layer(0)
    same = Layer(1)
    same._scope = "Default/layers-CellList/1-Layer"     # set by a compile: holds the layer's index
    assert key(base) == key(same)
    assert cell_reuse.cell_key(base) != cell_reuse.cell_key(same)      # layer_id counts unless ignored
    for different in (Layer(0, width=8), Layer(0, transpose=False), Layer(0, scale=0.25), Layer(0, frozen=True)):
        assert key(different) != key(base)
    odd = Layer(0)
    odd.helper = object()
    assert key(odd) != key(Layer(0))


def test_marked_layers_are_keyed_before_each_compile():
    """key_repeated keys only marked cells, sets the frontend-inline flag, and rekeys a layer changed since."""
    from mindspore import nn, ops

    class Layer(nn.Cell):
        def __init__(self):
            super().__init__()
            self.act = ops.ReLU()

        def construct(self, x):
            return self.act(x)

    class Net(nn.Cell):
        def __init__(self):
            super().__init__()
            self.layers = nn.CellList([Layer(), Layer(), Layer()])

        def construct(self, x):
            for layer in self.layers:
                x = layer(x)
            return x

    net = Net()
    cell_reuse.mark_repeated(net.layers[:2])
    assert cell_reuse.key_repeated(net) == 1
    assert net.layers[0].cell_init_args == net.layers[1].cell_init_args and net.layers[0].no_inline is False
    assert not hasattr(net.layers[2], "cell_init_args")
    net.layers[1].act = ops.Sigmoid()
    assert cell_reuse.key_repeated(net) == 2
    assert net.layers[0].cell_init_args != net.layers[1].cell_init_args
