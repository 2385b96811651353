"""A compiled function as a Cell that owns every Parameter the function touches.

The engine's compiled pieces (forward + backward, the optimizer update, evaluation, the RLHF stages' scoring
forwards) are closures over the model, the optimizer and the loss scaler. Compiled as `ms.jit` functions instead
(mindspore 2.9.0, CPU, both measured; bench/README.md):
- MindSpore's compile cache binds a cached graph's parameters through the Cell that was compiled; for a jit
  function it finds none and runs the cached graph on uninitialised memory (a constant loss, a NaN eval loss);
- the backward pass's matrix products run at half the forward rate (SmolLM2 LoRA step 28% slower, full 19%).
Owning the cells and parameters as attributes fixes both.
"""
from mindspore import ParameterTuple, jit, nn

from mindtune.engine.cell_reuse import key_repeated
from mindtune.engine.compile_cache import argument_spec, cell_structure


class CompiledFunction(nn.Cell):
    """`fn(*args)` compiled in graph mode; `owners` are the cells and parameters `fn` reads or writes. With a
    `cache` (engine/compile_cache.py) each new argument signature is loaded from it or compiled into it."""

    def __init__(self, fn, owners=(), parameters=(), cache=None, label: str = "graph"):
        super().__init__(auto_prefix=False)     # keep the owners' parameter names: checkpoints and the cache use them
        self.fn = fn
        for i, owner in enumerate(owners):
            setattr(self, f"owner_{i}", owner)
        self.loose_parameters = ParameterTuple(list(parameters)) if parameters else ()
        self.cache, self.label = cache, label
        self.structure = cell_structure(fn, owners) if cache is not None else ()
        self._called_with = set()          # argument_specs whose graph this process has compiled or loaded

    @jit   # compiled in PyNative mode too (train.graph_mode: false), as the engine's pieces always were
    def construct(self, *args):
        return self.fn(*args)

    def cached(self, args) -> bool:
        """Whether calling with `args` will load a cached graph instead of compiling one."""
        arguments = argument_spec(args)
        if self.cache is None or arguments in self._called_with:
            return False
        return self.cache.holds(self.cache.signature(self.label, arguments, self.get_parameters(), self.structure))

    def __call__(self, *args):
        arguments = argument_spec(args)
        if arguments in self._called_with:
            return super().__call__(*args)
        self._called_with.add(arguments)
        key_repeated(self)      # a new graph: key the repeated layers as they are now (engine/cell_reuse.py)
        if self.cache is None:
            return super().__call__(*args)
        signature = self.cache.signature(self.label, arguments, self.get_parameters(), self.structure)
        with self.cache.compiling(self.label, signature):
            return super().__call__(*args)
