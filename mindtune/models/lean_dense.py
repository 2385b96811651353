"""The projections' construct without the branches a Llama projection never takes: a smaller graph to compile.

MindFormers' `Linear` and MindPet's `LoRADense` construct every projection through branches for experts, grouped
matmul, bias, activation and input checks; MindSpore's frontend parses and type-infers each branch of each of a
Llama's 7 projections a layer, 30 layers over. A cell that takes none of them (but its activation) runs
`_lean_linear` or `_lean_lora_dense` instead: the same primitives, casts and reshapes in the same order, so the
same values (LoRA's scaling moves to the rank-wide side, equal up to float32 rounding). SmolLM2's LoRA step:
4,457 -> 3,213 func graphs, 45,640 -> 41,180 nodes to type-infer (`bench/diagnose_train.py --compile-phases base`).
"""
import types

from mindspore import nn
from mindspore.ops import functional as F


def _linear(self, x):
    return self.matmul(self.cast(self.reshape(x, (-1, self.in_channels)), self.dtype),
                       self.cast(self.weight, self.dtype))


def _lean_linear(self, x):
    """mindformers Linear.construct for a cell with no experts, bias or activation."""
    out_shape = self.shape(x)[:-1] + (self.out_channels,)
    return self.reshape(F.cast(_linear(self, x), F.dtype(x)), out_shape)


def _lean_linear_activated(self, x):
    """The same with the cell's activation (Llama's w1)."""
    out_shape = self.shape(x)[:-1] + (self.out_channels,)
    return self.reshape(F.cast(self.activation(_linear(self, x)), F.dtype(x)), out_shape)


def _lora(self, x):
    """(W x + B (scaling * A dropout(x)) on the rows of x, x's shape). MindPet scales B A x, [rows, out]; scaling
    A x, [rows, rank], instead multiplies a rank-wide tensor by the scalar, forward and backward (on CPU a
    broadcasting Mul; SmolLM2's LoRA step 4-5% faster, bench/README.md), equal up to float32 rounding."""
    x_shape = self.shape_op(x)
    rows = self.reshape(self.cast(x, self.dtype), (-1, x_shape[-1]))
    dense = self.matmul(rows, self.cast(self.weight, self.dtype))
    down = self.lora_a_matmul(self.lora_dropout(rows), self.cast(self.mindpet_delta_lora_a, self.dtype))
    delta = self.lora_b_matmul(self.mul(down, self.cast(self.scaling, self.dtype)),
                               self.cast(self.mindpet_delta_lora_b, self.dtype))
    return self.add(dense, delta), x_shape


def _lean_lora_dense(self, x):
    """mindpet LoRADense.construct for a cell with no bias or activation."""
    y, x_shape = _lora(self, x)
    return self.cast(self.reshape(y, x_shape[:-1] + (-1,)), F.dtype(x))


def _lean_lora_dense_activated(self, x):
    """The same with the cell's activation."""
    y, x_shape = _lora(self, x)
    return self.cast(self.reshape(self.activation(y), x_shape[:-1] + (-1,)), F.dtype(x))


# class name: (the flags whose branches the lean construct leaves out, lean construct without / with activation)
_LEAN = {
    "Linear": (("expert_flag", "use_gmm", "has_bias"), _lean_linear, _lean_linear_activated),
    "LoRADense": (("has_bias",), _lean_lora_dense, _lean_lora_dense_activated),
}


def simplify(network) -> int:
    """Give every Linear and LoRADense under `network` that has no bias (nor experts) the lean construct. Returns
    the number of cells changed (0 when done before). Call before the network is first compiled."""
    changed = 0
    for _, cell in list(network.cells_and_names()):     # the loop swaps children
        flags, lean, lean_activated = _LEAN.get(type(cell).__name__, ((), None, None))
        if lean is None or "construct" in vars(cell) or not hasattr(cell, "activation_flag"):
            continue
        if all(hasattr(cell, flag) and not getattr(cell, flag) for flag in flags):   # an unknown version: no
            cell.construct = types.MethodType(lean_activated if cell.activation_flag else lean, cell)
            changed += 1
            dropout = getattr(cell, "lora_dropout", None)
            if isinstance(dropout, nn.Dropout) and (dropout.p == 0 or dropout.keep_prob == 1):
                cell.lora_dropout = nn.Identity()     # what nn.Dropout returns then, without its branches
    return changed
