"""Work-arounds for upstream gaps, each with the version, what fails and what the shim does.

Keep every shim here, small and named; nothing else in mindtune patches upstream code.
"""
import logging
import os
import tempfile


def quiet_environment():
    """mindspore 2.9.0 / mindformers 1.9.0 print hundreds of WARNING/INFO lines while a model is built, and
    mindformers writes a log tree under ./output/log of the working directory.

    Shim: before either is imported, raise MindSpore's glog level to errors (GLOG_v=3) and point mindformers'
    LOCAL_DEFAULT_PATH at a temporary folder, so runs stay tidy and the terminal shows mindtune's progress.
    Must run before `import mindspore`; the CLI and the tests' conftest call it first.
    """
    os.environ.setdefault("GLOG_v", "3")
    os.environ.setdefault("LOCAL_DEFAULT_PATH", os.path.join(tempfile.gettempdir(), "mindtune-mindformers"))


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
_BROADCASTING = {"LLamaAttention": ("add",),                      # mask [B,1,T,T] + scores [B,H,T,T]
                 "LlamaRMSNorm": ("mul", "mul2"),                 # x * rsqrt(mean) [B,T,1], * weight [H]
                 "RotaryEmbedding": ("mul", "mul_inc", "mul_with_batch_freqs")}   # q, k * cos, sin [1,1,T,D]


def cpu_explicit_broadcasts(network) -> int:
    """mindspore 2.9.0, CPU: the kernel of a broadcasting binary op (Add, Mul, ... with operands of different
    shapes) keeps about 16 bytes per output element for the life of the graph (measured: 10 Adds of a [4096, 1]
    column to a [4096, 2048] matrix hold 1.3 GB; with the column broadcast first by BroadcastTo, 0.1 GB). In a
    Llama training step that is most of the resident memory: the attention mask added to every head's scores,
    RMSNorm's two scalings, the rotary embedding's cos/sin products, forward and backward, in every layer.

    Shim: swap those primitives on MindFormers' cells for a cell that broadcasts the smaller operand with
    BroadcastTo first and then applies the same primitive to equal shapes: the same values, bit for bit. The
    attention softmax's gradient, out * (dout - sum(out * dout)), subtracts a [B,H,T,1] column from [B,H,T,T]: its
    Softmax is swapped for a cell whose bprop is that formula with the column broadcast first (measured on ten
    [16,4096,256] softmaxes: 3.9 GB -> 1.4 GB held).

    Also mindspore 2.9.0, CPU: a last-axis ReduceSum/ReduceMean of a 3-D or 4-D tensor runs 2-8x slower than the
    same reduction of its 2-D [rows, last] view (sum of [4,9,256,256] over the last axis: 11.2 vs 1.5 ms; mean of
    [4,256,576]: 3.6 vs 0.6 ms; `bench/diagnose_reduce.py`).
    Those reductions are RMSNorm's mean of squares, the gradient of its [B,T,1] scaling (BroadcastTo's gradient
    sums over the broadcast axis) and the softmax gradient's column, in every layer. The swapped cells therefore
    work on 2-D views where the small operand is a last-axis column or a last-axis row, and RMSNorm's mean is taken
    on a 2-D view: the same values up to float32 summation order (reshapes only; tested to 1e-5 against the
    unshimmed cells).
    Also mindformers 1.9.0, LLamaAttention without flash attention: for grouped-query attention it copies every
    key and value head n_rep times (`_repeat_kv`, a Tile whose gradient sums the copies back) and then runs
    n_heads small batched products. Shim (attention cells with n_rep > 1): keep the kv heads and run the n_rep
    query heads of each kv head as one [n_rep * T, head_dim] block against it (`_attn` below: the same ops in the
    same order, the query heads regrouped by reshapes only; MindFormers' head h uses kv head h // n_rep, which is
    what the regrouping gives): SmolLM2's attention core (9 heads, 3 kv heads, T = 256, 4 rows) took 25 ms a layer
    forward + backward instead of 32-33 ms, values equal up to float32 summation order.
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

    class SoftmaxBroadcastGrad(nn.Cell):
        def __init__(self, softmax):
            super().__init__()
            self.softmax = softmax
            self.sum_last = ops.ReduceSum(keep_dims=True)

        def construct(self, x):
            return self.softmax(x)

        def bprop(self, x, out, dout):
            rows = (-1, dout.shape[-1])
            column = self.sum_last((out * dout).reshape(rows), -1)
            return (out * (dout - ops.broadcast_to(column, rows).reshape(dout.shape)),)

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

    def grouped_attn(self, query, key, value, mask):
        """LLamaAttention._attn with each kv head's query heads as one block (keys and values not repeated)."""
        bs, n_head, seq, head_dim = query.shape
        n_kv, kv_len = key.shape[1], key.shape[2]
        grouped = query.reshape(bs, n_kv, n_head // n_kv * seq, head_dim)
        score = self.batch_matmul_q_k(grouped, key).reshape(bs, n_head, seq, kv_len)
        score = self.mul(score, self.inv_norm_factor)
        score = self.add(mask, score)
        probs = self.softmax(self.cast_attn(score, self.softmax_dtype))
        probs = self.cast(probs, self.dtype).reshape(bs, n_kv, n_head // n_kv * seq, kv_len)
        weighted = self.batch_matmul(probs, value).reshape(bs, n_head, seq, head_dim)
        return self._merge_heads(weighted)

    swapped = 0
    for _, cell in list(network.cells_and_names()):
        if type(cell).__name__ == "LLamaAttention" and getattr(cell, "n_rep", 1) > 1 and \
                not cell.use_flash_attention and "_attn" not in vars(cell):
            cell._repeat_kv = types.MethodType(keep_kv_heads, cell)
            cell._attn = types.MethodType(grouped_attn, cell)
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
        softmax = getattr(cell, "softmax", None)
        # the bprop's formula sums over the last axis: swap only a last-axis Softmax
        if type(cell).__name__ == "LLamaAttention" and isinstance(softmax, Primitive) and softmax.axis in ((-1,), -1):
            cell.softmax = SoftmaxBroadcastGrad(softmax)
            swapped += 1
    return swapped
