"""Compile a model's repeated layers once for all of them: MindSpore's cell reuse, inlined in the frontend.

Why: a graph-mode step compiles every layer of the model on its own, about 1.5 s a layer in MindSpore 2.9's
frontend (type inference, automatic differentiation, their passes): SmolLM2's 30-layer LoRA step took 50-60 s
to its first step on CPU. MindSpore parses, infers and differentiates a cell once for all cells that carry the
same `cell_init_args` key and are marked reusable, passing each one's parameters to the shared graph as inputs;
with `no_inline = False` (what `mindspore.lazy_inline(policy="front")` sets) the shared graph is inlined again at
the end of the frontend, so the CPU backend, which refuses reuse ("CPU does not support the lazy_inline
feature"), sees an ordinary graph. bench/README.md has the measurements.

`lazy_inline` keys a cell by its `__init__` arguments. mindtune changes MindFormers' layers after building them
(the CPU shims, PEFT), so it keys each marked layer by what MindSpore's parser reads from it instead, computed
just before each compile: every sub-cell's path and class, its attributes (numbers, strings, dtypes, primitives
and their attributes, constant tensors by value) and its parameters' shapes, dtypes and `requires_grad`. Two
layers share a graph only when all of that is equal; a value this module cannot describe keys its layer alone.
"""
import hashlib
import types

import numpy as np
from mindspore import Parameter, Tensor, nn
from mindspore.common import dtype as mstype
from mindspore.ops.primitive import Primitive

_MARK = "_mindtune_repeated"     # the attribute mark_repeated sets: the names of attributes to leave out of the key
_KEY_PREFIX = "lazy_inline_mindtune_"

# MindSpore's per-instance bookkeeping on every Cell, none of which the parser turns into graph content:
# creation time, the scope names a compile assigns (they hold the layer's index), compile state, and the
# parameters and sub-cells, which the key describes by themselves.
_BOOKKEEPING = {"_create_time", "_scope", "_cell_init_args", "no_inline", "_params", "_params_list", "_cells",
                "_compile_cache", "_compiled", "_compile_phase", "_phase_cache", "_jit_graph_name", "_id",
                "_param_prefix", "_parameter_layout_dict", "_parallel_parameter_name_list",
                "_parallel_parameter_merge_net_dict", "arguments_key", _MARK}


def mark_repeated(cells, ignore=()) -> None:
    """Mark `cells` (a model's decoder layers) for reuse. `ignore`: attributes that differ between them but that
    their construct does not read (MindFormers' `layer_id`)."""
    for cell in cells:
        object.__setattr__(cell, _MARK, tuple(ignore))


def key_repeated(root) -> int:
    """Key every marked cell under `root` by its content (call before each compile: PEFT and shims may have
    changed the layers since they were built). Returns the number of distinct keys."""
    keys = set()
    for _, cell in root.cells_and_names():
        ignore = getattr(cell, _MARK, None)
        if ignore is None:
            continue
        key = _KEY_PREFIX + cell_key(cell, ignore)
        if getattr(cell, "cell_init_args", None) != key:
            cell.cell_init_args = key
        cell.no_inline = False        # inline the shared graph in the frontend ("front" policy)
        keys.add(key)
    return len(keys)


def cell_key(cell, ignore=()) -> str:
    """A digest of everything MindSpore's parser reads from `cell` and its sub-cells, parameters by shape."""
    paths = {id(c): name for name, c in cell.cells_and_names()}
    parts = []
    for name, sub in cell.cells_and_names():
        parts.append(("cell", name, type(sub).__module__, type(sub).__qualname__))
        for attr in sorted(vars(sub)):
            if attr in _BOOKKEEPING or attr in ignore:
                continue
            parts.append((name, attr, _describe(vars(sub)[attr], sub, paths)))
        for pname, param in sub.parameters_and_names(expand=False):
            parts.append((name, pname, _describe(param, sub, paths)))
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:24]


def _describe(value, owner, paths, depth=0):
    """A value as the parser would bake it into the graph; unknown objects by identity (never shared)."""
    if depth > 6:
        return ("deep", id(value))
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return repr(value)
    if isinstance(value, mstype.Type):
        return ("dtype", str(value))
    if isinstance(value, Parameter):
        return ("parameter", tuple(value.shape), str(value.dtype), bool(value.requires_grad))
    if isinstance(value, (Tensor, np.ndarray)):
        array = value.asnumpy() if isinstance(value, Tensor) else value
        return ("tensor", array.shape, str(array.dtype), hashlib.sha256(np.ascontiguousarray(array)).hexdigest())
    if isinstance(value, Primitive):
        return ("primitive", type(value).__qualname__, value.name,
                tuple((k, _describe(v, owner, paths, depth + 1)) for k, v in sorted(value.attrs.items())))
    if isinstance(value, nn.Cell):        # a sub-cell by its path inside the keyed cell
        return ("cell", paths.get(id(value), id(value)))
    if isinstance(value, types.MethodType):
        bound = "owner" if value.__self__ is owner else _describe(value.__self__, owner, paths, depth + 1)
        return ("method", _describe(value.__func__, owner, paths, depth + 1), bound)
    if isinstance(value, types.FunctionType):
        closure = tuple(_describe(c.cell_contents, owner, paths, depth + 1) for c in value.__closure__ or ())
        return ("function", value.__module__, value.__qualname__, closure)
    if isinstance(value, (types.BuiltinFunctionType, type, types.ModuleType)):
        return ("named", getattr(value, "__module__", None), getattr(value, "__qualname__", value.__name__))
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, tuple(_describe(v, owner, paths, depth + 1) for v in value))
    if isinstance(value, (set, frozenset)):
        return ("set", tuple(sorted(repr(_describe(v, owner, paths, depth + 1)) for v in value)))
    if isinstance(value, dict):
        return ("dict", tuple((repr(k), _describe(v, owner, paths, depth + 1)) for k, v in value.items()))
    return ("object", type(value).__qualname__, id(value))
