"""Work-arounds for upstream gaps, each with the version, what fails and what the shim does.

Keep every shim here, small and named; nothing else in mindtune patches upstream code.
"""
import importlib
import importlib.machinery
import importlib.util
import logging
import os
import sys
import tempfile
import types


def quiet_environment():
    """mindspore 2.9.0 / mindformers 1.9.0 print hundreds of WARNING/INFO lines while a model is built, and
    mindformers writes a log tree under ./output/log of the working directory.

    Shim: before either is imported, raise MindSpore's glog level to errors (GLOG_v=3) and point mindformers'
    LOCAL_DEFAULT_PATH at a temporary folder, so runs stay tidy and the terminal shows mindtune's progress; and
    defer mindformers' unused imports (`defer_unused_imports`). Must run before `import mindspore`; the CLI and
    the tests' conftest call it first.
    """
    os.environ.setdefault("GLOG_v", "3")
    os.environ.setdefault("LOCAL_DEFAULT_PATH", os.path.join(tempfile.gettempdir(), "mindtune-mindformers"))
    defer_unused_imports()


# module -> the names mindformers imports from it with `from module import name`
_DEFERRED = {"datasets": (), "datasets.distributed": ("split_dataset_by_node",),
             "nltk.translate.bleu_score": ("sentence_bleu", "SmoothingFunction")}


class _StandIn(types.ModuleType):
    """Holds a module's place in sys.modules until something reads an attribute it lacks."""

    def __getattr__(self, attr):
        if attr == "__path__":   # asked by every `from module import name`: a module, not a package (packages have it)
            raise AttributeError(attr)
        return getattr(_real_module(self.__name__), attr)


def _real_module(name: str):
    """The real module: on first use, every stand-in of its package leaves sys.modules and the real one is imported."""
    if isinstance(sys.modules.get(name), _StandIn):
        package = name.split(".")[0]
        for other in [m for m in sys.modules if m.split(".")[0] == package]:
            if isinstance(sys.modules[other], _StandIn):
                del sys.modules[other]
    return importlib.import_module(name)


def _call_through(module: str, attr: str):
    def call(*args, **kwargs):
        return getattr(_real_module(module), attr)(*args, **kwargs)
    call.__name__ = call.__qualname__ = attr
    return call


def _spec_on_disk(name: str):
    """A module's spec, found without importing its parent packages (None when it is not installed)."""
    parts = name.split(".")
    spec = importlib.util.find_spec(parts[0])
    for depth in range(2, len(parts) + 1):
        if spec is None or not spec.submodule_search_locations:
            return None
        spec = importlib.machinery.PathFinder.find_spec(".".join(parts[:depth]), spec.submodule_search_locations)
    return spec


def defer_unused_imports():
    """mindformers 1.9.0's `import mindformers` imports HuggingFace `datasets` for its HF dataloader
    (mindformers/dataset/dataloader/hf_dataloader.py, with pandas and aiohttp: 0.7 s) and nltk's BLEU for
    its ADGEN metric (mindformers/core/metric/metric.py; nltk's __init__ imports scipy.stats: 0.5 s), both with
    `from module import name`, and only calls them inside functions mindtune never runs. That was 1.25 s of the
    2.7 s a run spends importing mindspore and mindformers (`python -X importtime`).

    Shim: until something uses them, those modules are stand-ins in sys.modules (with the real module's spec, so
    `importlib.util.find_spec` still answers), and the names mindformers imports from them are functions that
    import the real module and call it. Reading any other attribute of a stand-in imports the real module in its
    place (mindtune's own BLEU, mindtune/eval/metrics.py, goes through the same functions). Must run before
    `import mindformers`.
    """
    for name, names in _DEFERRED.items():
        if name in sys.modules:
            continue
        spec = _spec_on_disk(name)
        if spec is None:    # not installed: importing mindformers fails as it would have
            continue
        stand_in = _StandIn(name)
        stand_in.__spec__ = spec
        if spec.submodule_search_locations is not None:
            stand_in.__path__ = spec.submodule_search_locations
        for attr in names:
            setattr(stand_in, attr, _call_through(name, attr))
        sys.modules[name] = stand_in


_done = {}


def quiet_mindformers_logger():
    """mindformers 1.9.0 logs every module build at INFO to stdout, and warns at import about optional
    packages it cannot find (hyper_parallel). Shim: import it with stdout captured, then point its handlers
    at the process's real stdout (sys.__stdout__, which no test runner swaps out and closes) at ERROR level.
    Done once per process.
    """
    import contextlib
    import io
    import sys

    if _done.get("mindformers_logger"):
        return
    _done["mindformers_logger"] = True
    with contextlib.redirect_stdout(io.StringIO()):
        from mindformers.tools.logger import get_logger
        mf_logger = get_logger()
    mf_logger.setLevel(logging.ERROR)
    for handler in mf_logger.handlers:
        # only mindformers' own handlers: under pytest the logger also carries pytest's LogCaptureHandlers,
        # whose StringIO streams must stay theirs (re-pointing them breaks pytest's log capture)
        if not type(handler).__module__.startswith("mindformers"):
            continue
        handler.setLevel(logging.ERROR)
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setStream(sys.__stdout__)


def apply(profile):
    """Apply the shims a device profile needs. Called once by `mindtune.device.setup_context`."""
    quiet_environment()
    quiet_mindformers_logger()


# (class name, attribute names of its broadcasting Mul/Add primitives)
_BROADCASTING = {"LlamaRMSNorm": ("mul", "mul2"),                 # x * rsqrt(mean) [B,T,1], * weight [H]
                 "RotaryEmbedding": ("mul", "mul_inc", "mul_with_batch_freqs")}   # q, k * cos, sin [1,1,T,D]


def cpu_explicit_broadcasts(network) -> int:
    """mindspore 2.9.0, CPU: the kernel of a broadcasting binary op (Add, Mul, ... with operands of different
    shapes) keeps about 16 bytes per output element for the life of the graph (measured: 10 Adds of a [4096, 1]
    column to a [4096, 2048] matrix hold 1.3 GB; with the column broadcast first by BroadcastTo, 0.1 GB). In a
    Llama training step that is most of the resident memory: the attention mask added to every head's scores,
    RMSNorm's two scalings, the rotary embedding's cos/sin products, forward and backward, in every layer.

    Shim: swap those primitives on MindFormers' cells for a cell that broadcasts the smaller operand with
    BroadcastTo first and then applies the same primitive to equal shapes: the same values, bit for bit. The
    attention's mask add and softmax gradient are handled by the attention core below, which broadcasts the mask
    once and has no broadcast in its backward.

    Also mindspore 2.9.0, CPU: a last-axis ReduceSum/ReduceMean of a 3-D or 4-D tensor runs 2-8x slower than the
    same reduction of its 2-D [rows, last] view (sum of [4,9,256,256] over the last axis: 11.2 vs 1.5 ms; mean of
    [4,256,576]: 3.6 vs 0.6 ms; `bench/diagnose_reduce.py`).
    Those reductions are RMSNorm's mean of squares, the gradient of its [B,T,1] scaling (BroadcastTo's gradient
    sums over the broadcast axis) and the attention backward's row sums, in every layer. The swapped cells therefore
    work on 2-D views where the small operand is a last-axis column or a last-axis row, and RMSNorm's mean is taken
    on a 2-D view: the same values up to float32 summation order (reshapes only; tested to 1e-5 against the
    unshimmed cells).
    Also mindformers 1.9.0, LLamaAttention without flash attention: for grouped-query attention it copies every
    key and value head n_rep times (`_repeat_kv`, a Tile whose gradient sums the copies back) and then runs
    n_heads small batched products; it scales the [B, H, T, T] scores rather than the queries; and MindSpore's
    softmax gradient, out * (dout - rowsum(out * dout)), broadcasts a column over the scores (slow on CPU, and
    with the broadcast made explicit a BroadcastTo of 2.6 ms a layer at SmolLM2's shapes). Shim: `_attn` becomes
    `shimmed_attn` below, around the `AttentionCore` cell: the queries are scaled, the n_rep query heads of each kv head run as one
    [n_rep * T, head_dim] block against it (reshapes only; MindFormers' head h uses kv head h // n_rep, which is
    what the regrouping gives), and the backward is written out as flash attention's: with D = rowsum(dO * O),
    dS = P * (dO V^T - D), and dO V^T - D is one batched product of [dO, D] with [V, -1], so no score-sized
    broadcast, subtraction or scaling is left. SmolLM2's attention core (4 rows, 9 heads, 3 kv heads, T = 256)
    forward + backward, `bench/diagnose_attention.py`: 30.4 ms a layer with the kv heads repeated, 24.1 ms grouped,
    14.7 ms as here (PyTorch's scaled_dot_product_attention: 9.9 ms); values and gradients equal up to float32
    summation order.
    CPU profile only. Returns the number of primitives and methods swapped.
    """
    import types

    from mindspore import nn, ops
    from mindspore.ops.primitive import Primitive

    def row_view_fits(operand, shape):
        """Whether an operand of a broadcast to `shape` has a 2-D [rows, shape[-1]] view: the full shape, a
        last-axis column [..., 1] over the same leading axes, or a last-axis row [shape[-1]]."""
        return operand == shape or operand == shape[:-1] + (1,) or operand == shape[-1:]

    def as_rows(t, shape):
        """`t` (one that row_view_fits) broadcast to the 2-D view [rows, shape[-1]] of `shape`."""
        rows = 1
        for n in shape[:-1]:
            rows *= n
        if t.shape == shape:
            return t.reshape(rows, shape[-1])
        if t.ndim == 1:
            return ops.broadcast_to(t, (rows, shape[-1]))
        return ops.broadcast_to(t.reshape(rows, 1), (rows, shape[-1]))

    class BroadcastFirst(nn.Cell):
        def __init__(self, primitive):
            super().__init__()
            self.op = primitive

        def construct(self, x, y):
            if x.shape == y.shape or x.ndim == 0 or y.ndim == 0:
                return self.op(x, y)
            shape = x.shape if x.size >= y.size else y.shape
            if len(shape) > 2 and row_view_fits(x.shape, shape) and row_view_fits(y.shape, shape):
                return self.op(as_rows(x, shape), as_rows(y, shape)).reshape(shape)
            if x.size >= y.size:
                return self.op(x, ops.broadcast_to(y, x.shape))
            return self.op(ops.broadcast_to(x, y.shape), y)

    class AttentionCore(nn.Cell):
        """(softmax(q k^T + mask) v, the probabilities) for q [B, G, R, D] (G kv heads, R = n_rep * T query rows,
        already scaled), k and v [B, G, K, D], mask [B, n_rep * G, T, K]; computed in `dtype` (the softmax's).
        The probabilities are an output because a bprop sees only the inputs and the outputs."""
        def __init__(self, dtype):
            super().__init__()
            self.dtype = dtype
            self.scores = ops.BatchMatMul(transpose_b=True)
            self.product = ops.BatchMatMul()
            self.product_ta = ops.BatchMatMul(transpose_a=True)
            self.softmax = ops.Softmax(-1)
            self.sum_last = ops.ReduceSum(keep_dims=True)

        def construct(self, q, k, v, mask):
            b, groups, rows, _ = q.shape
            s = self.scores(ops.cast(q, self.dtype), ops.cast(k, self.dtype)).reshape(mask.shape) + mask
            probs = self.softmax(s).reshape(b, groups, rows, k.shape[2])
            return ops.cast(self.product(probs, ops.cast(v, self.dtype)), q.dtype), probs

        def bprop(self, q, k, v, mask, out, dout):
            q32, k32, v32 = ops.cast(q, self.dtype), ops.cast(k, self.dtype), ops.cast(v, self.dtype)
            out32, probs = ops.cast(out[0], self.dtype), out[1]
            d_out = ops.cast(dout[0], self.dtype)
            d_v = self.product_ta(probs, d_out)
            width = out32.shape[-1]
            rowsum = self.sum_last((out32 * d_out).reshape(-1, width), -1).reshape(out32.shape[:-1] + (1,))
            minus_ones = ops.fill(self.dtype, v32.shape[:-1] + (1,), -1.0)
            # dP - D = dO V^T - D = [dO, D] [V, -1]^T: softmax's backward without broadcasting D over the scores
            d_probs_centered = self.scores(ops.concat((d_out, rowsum), -1), ops.concat((v32, minus_ones), -1))
            d_scores = probs * d_probs_centered
            return (ops.cast(self.product(d_scores, k32), q.dtype), ops.cast(self.product_ta(d_scores, q32), k.dtype),
                    ops.cast(d_v, v.dtype), ops.zeros_like(mask))

    class RowMean(nn.Cell):
        """A keep-dims mean over the last axis, taken on the 2-D view."""
        def __init__(self, primitive):
            super().__init__()
            self.op = primitive

        def construct(self, x, axis):
            if x.ndim > 2 and axis in (-1, x.ndim - 1):
                return self.op(x.reshape(-1, x.shape[-1]), -1).reshape(x.shape[:-1] + (1,))
            return self.op(x, axis)

    def keep_kv_heads(self, x, rep):
        return x

    def shimmed_attn(self, query, key, value, mask):
        """LLamaAttention._attn with scaled queries, grouped heads and AttentionCore's backward."""
        bs, n_head, seq, head_dim = query.shape
        n_kv, kv_len = key.shape[1], key.shape[2]
        grouped = self.mul(query, self.inv_norm_factor).reshape(bs, n_kv, n_head // n_kv * seq, head_dim)
        # one broadcast of the mask, shared by every layer (the same node: the graph keeps one)
        mask = ops.cast(ops.broadcast_to(mask, (bs, n_head, seq, kv_len)), self.softmax_dtype)
        weighted, _ = self.attention_core(grouped, key, value, mask)
        return self._merge_heads(weighted.reshape(bs, n_head, seq, head_dim))

    swapped = 0
    for _, cell in list(network.cells_and_names()):
        if type(cell).__name__ == "LLamaAttention" and not cell.use_flash_attention and "_attn" not in vars(cell):
            cell.attention_core = AttentionCore(cell.softmax_dtype)
            cell._repeat_kv = types.MethodType(keep_kv_heads, cell)
            cell._attn = types.MethodType(shimmed_attn, cell)
            swapped += 2
        for name in _BROADCASTING.get(type(cell).__name__, ()):
            primitive = getattr(cell, name, None)
            if isinstance(primitive, Primitive):
                setattr(cell, name, BroadcastFirst(primitive))
                swapped += 1
        mean = getattr(cell, "mean", None)
        if type(cell).__name__ == "LlamaRMSNorm" and isinstance(mean, Primitive) and mean.keep_dims:
            cell.mean = RowMean(mean)
            swapped += 1
    return swapped
