"""Fused float32 CPU kernels (RMSNorm, SiLU, the rotary embedding, the label log-softmax, the attention's head
transposes) as MindSpore Custom operators, for the CPU profile only.

Why: MindSpore 2.9 runs a Llama layer's element-wise work on CPU as many small kernels, each a pass over memory
with a runtime gap after it. An RMSNorm is about 8 kernels forward and 10 backward (square, mean, add, rsqrt, the
broadcasts and products, their gradients); MindFormers' SiLU is a sigmoid and a product forward and four kernels
backward. Written out in C++ each is one kernel forward and one backward (fused.cc). The cross-entropy's
log-softmax over the vocabulary and the pick of each label likewise (MindSpore's CPU LogSoftmaxGrad alone took
6% of a SmolLM2 step); the losses use it through `mindtune.engine.losses.LABEL_LOG_PROBS`, which
`mindtune.device.setup_context` points at it on CPU.
In SmolLM2's LoRA step (4 x 256; `bench/diagnose_train.py --only base,no_fused,base,no_fused`, 2026-12-04;
`no_fused` sets MINDTUNE_CPU_KERNELS=0): 6.26, 7.02, 6.28 and 6.25 s a step against 7.92, 8.89, 8.73 and 7.50 s
with MindSpore's kernels, 5.0-5.2 against 6.0 GB peak (bench/README.md, "Fused CPU kernels").

How: fused.cc is compiled on first use with the host's C++ compiler (`CXX`, else g++) into the cache directory
(`MINDTUNE_CACHE_DIR`, else ~/.cache/mindtune)/kernels/, named by a digest of the source, the flags, the compiler
and this CPU's instruction-set flags (the library is built with -march=native). Without a compiler, or with
MINDTUNE_CPU_KERNELS=0, `library()` is None, one line says so, and the model keeps MindSpore's own kernels.
Ascend never uses them: its profile runs MindFormers' fused RmsNorm and flash attention.
"""
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import types
from typing import Optional

import mindspore as ms
from mindspore import ops
from mindspore.ops.primitive import Primitive

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fused.cc")
# -ffast-math: GCC then calls glibc's vectorised expf (SiLU, the log-softmax)
# -fopenmp-simd: honours `omp simd` without the OpenMP runtime
FLAGS = ("-O3", "-march=native", "-ffast-math", "-fopenmp-simd", "-fPIC")


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            return next((line for line in fh if line.startswith("flags")), "")
    except OSError:
        return ""


def _compiler_version(compiler: str) -> str:
    done = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30)
    return done.stdout.splitlines()[0] if done.returncode == 0 and done.stdout else ""


@functools.lru_cache(maxsize=None)
def library() -> Optional[str]:
    """Path of the built kernel library, built now if needed; None (said once on stderr) when it cannot be."""
    if os.environ.get("MINDTUNE_CPU_KERNELS", "1") == "0":
        return None
    from mindtune.data.cache import default_cache_dir

    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler is None:
        print(f"mindtune: no C++ compiler ({os.environ.get('CXX', 'g++')}) on PATH: the CPU fused kernels are off "
              "(training runs, more slowly)", file=sys.stderr)
        return None
    with open(SOURCE, "rb") as fh:
        source = fh.read()
    digest = hashlib.sha256(b"\0".join([source, " ".join(FLAGS).encode(), _compiler_version(compiler).encode(),
                                        _cpu_flags().encode()])).hexdigest()[:16]
    directory = os.path.join(default_cache_dir(), "kernels")
    path = os.path.join(directory, f"fused-{digest}.so")
    if os.path.isfile(path):
        return path
    os.makedirs(directory, exist_ok=True)
    fd, partial = tempfile.mkstemp(suffix=".so.partial", dir=directory)
    os.close(fd)
    objects = partial + ".o"
    # Compiled with -ffast-math, linked without it: GCC would otherwise link crtfastmath.o into the library, which
    # switches the whole process to flush-to-zero for denormals when MindSpore loads it.
    done = subprocess.run([compiler, *FLAGS, "-c", "-o", objects, SOURCE], capture_output=True, text=True)
    if done.returncode == 0:
        done = subprocess.run([compiler, "-shared", "-o", partial, objects], capture_output=True, text=True)
    if os.path.exists(objects):
        os.unlink(objects)
    if done.returncode != 0:
        os.unlink(partial)
        first = (done.stderr.strip().splitlines() or ["no message"])[0]
        print(f"mindtune: building the CPU fused kernels failed ({compiler}: {first}); they are off",
              file=sys.stderr)
        return None
    os.replace(partial, path)    # atomic: a concurrent run sees the whole library or none
    return path


@functools.lru_cache(maxsize=None)
def rms_norm():
    """The Custom op (x [..., h] float32, weight [h] float32, eps [1] float32) -> x * weight / rms(x), with its
    backward (dx and dweight) in one kernel. None without the library."""
    path = library()
    if path is None:
        return None
    backward = ops.Custom(f"{path}:rms_norm_backward", out_shape=lambda x, w, e, d: (x, w),
                          out_dtype=lambda x, w, e, d: (x, w), func_type="aot")

    def bprop(x, weight, eps, out, dout):
        dx, dweight = backward(x, weight, eps, dout)
        return dx, dweight, ops.zeros_like(eps)

    return ops.Custom(f"{path}:rms_norm_forward", out_shape=lambda x, w, e: x, out_dtype=lambda x, w, e: x,
                      func_type="aot", bprop=bprop)


@functools.lru_cache(maxsize=None)
def silu():
    """The Custom op x (float32) -> x * sigmoid(x), with its backward in one kernel. None without the library."""
    path = library()
    if path is None:
        return None
    backward = ops.Custom(f"{path}:silu_backward", out_shape=lambda x, d: x, out_dtype=lambda x, d: x,
                          func_type="aot")

    def bprop(x, out, dout):
        return (backward(x, dout),)

    return ops.Custom(f"{path}:silu_forward", out_shape=lambda x: x, out_dtype=lambda x: x, func_type="aot",
                      bprop=bprop)



@functools.lru_cache(maxsize=None)
def rope():
    """The Custom op (x [B, H, T, D], cos [C, T, D], sin [C, T, D], C 1 or B; float32) -> MindFormers' rotary
    embedding x * cos + [-x2, x1] * sin, with its backward in x in one kernel. cos and sin get a zero gradient: they
    are the model's frozen tables of positions. None without the library."""
    path = library()
    if path is None:
        return None
    backward = ops.Custom(f"{path}:rope_backward", out_shape=lambda d, c, s: d, out_dtype=lambda d, c, s: d,
                          func_type="aot")

    def bprop(x, cos, sin, out, dout):
        return backward(dout, cos, sin), ops.zeros_like(cos), ops.zeros_like(sin)

    return ops.Custom(f"{path}:rope_forward", out_shape=lambda x, c, s: x, out_dtype=lambda x, c, s: x,
                      func_type="aot", bprop=bprop)


def _rope_table(table, x):
    """`table` ([T, D] or [C, 1, T, D]) as the kernel's [C, T, D] for x [B, H, T, D]; None if it is neither."""
    if table.ndim == 2 and table.shape == x.shape[2:]:
        return table.reshape((1,) + table.shape)
    if (table.ndim == 4 and table.shape[1] == 1 and table.shape[2:] == x.shape[2:]
            and table.shape[0] in (1, x.shape[0])):
        return table.reshape((table.shape[0],) + table.shape[2:])
    return None


@functools.lru_cache(maxsize=None)
def label_log_softmax():
    """The Custom op (logits [K, V] float32, labels [K] int32 in [0, V)) -> (log_softmax(logits)[k, labels[k]] [K],
    logsumexp(logits) [K]), with its backward in logits, d logits = d * (onehot(labels) - softmax(logits)), in one
    kernel. None without the library."""
    path = library()
    if path is None:
        return None
    backward = ops.Custom(f"{path}:label_log_softmax_backward", out_shape=lambda x, l, s, d: x,
                          out_dtype=lambda x, l, s, d: x, func_type="aot")

    def bprop(logits, labels, out, dout):
        return backward(logits, labels, out[1], dout[0]), ops.zeros_like(labels)

    return ops.Custom(f"{path}:label_log_softmax_forward", out_shape=lambda x, l: (l, l),
                      out_dtype=lambda x, l: (x, x), func_type="aot", bprop=bprop)


@functools.lru_cache(maxsize=None)
def swap_middle_axes():
    """The Custom op x [A, B, C, D] float32 -> x.transpose(0, 2, 1, 3); its backward is the same op. None without
    the library."""
    path = library()
    if path is None:
        return None
    shape = lambda x: (x[0], x[2], x[1], x[3])   # noqa: E731
    swap = ops.Custom(f"{path}:swap_middle_axes", out_shape=shape, out_dtype=lambda x: x, func_type="aot")

    def bprop(x, out, dout):
        return (swap(dout),)

    return ops.Custom(f"{path}:swap_middle_axes", out_shape=shape, out_dtype=lambda x: x, func_type="aot",
                      bprop=bprop)


class FusedHeadTranspose(ms.nn.Cell):
    """MindFormers' attention Transpose primitive, on the fused kernel for float32 4-D inputs with perm (0, 2, 1, 3)
    (the split into heads and the merge back); anything else runs the primitive.

    Why: MindSpore 2.9's CPU Transpose kernel builds an 8-byte index per output element when it is created and
    keeps it: the 8 attention transposes of each layer's forward and backward made a SmolLM2 LoRA step's compile
    fault in about 0.75 GB more and take seconds longer."""
    def __init__(self, primitive):
        super().__init__(auto_prefix=False)
        self.primitive = primitive
        self.swap = swap_middle_axes()

    def construct(self, x, perm):
        if perm == (0, 2, 1, 3) and x.ndim == 4 and x.dtype == ms.float32:
            return self.swap(x)
        return self.primitive(x, perm)


class FusedRotary(ms.nn.Cell):
    """MindFormers' RotaryEmbedding (rope-slice path) on the fused kernel for float32 tables of the queries' shape;
    anything else runs the wrapped cell."""
    def __init__(self, rotary):
        super().__init__(auto_prefix=False)
        self.rotary = rotary
        self.fused_rope = rope()

    def construct(self, xq, xk, freqs_cis):
        cos, sin, _ = freqs_cis
        cos_q, sin_q = _rope_table(cos, xq), _rope_table(sin, xq)
        if (not self.rotary.use_rope_slice or self.rotary.dtype != ms.float32 or cos.dtype != ms.float32
                or xq.ndim != 4 or cos_q is None or sin_q is None or _rope_table(cos, xk) is None):
            return self.rotary(xq, xk, freqs_cis)
        q = self.fused_rope(ops.cast(xq, ms.float32), cos_q, sin_q)
        k = self.fused_rope(ops.cast(xk, ms.float32), cos_q, sin_q)
        return ops.cast(q, xq.dtype), ops.cast(k, xk.dtype)


def _fused_rms_norm(self, x):
    """LlamaRMSNorm.rms_norm on the fused kernel (float32; other dtypes keep MindFormers' own path)."""
    if x.dtype != ms.float32 or self.weight.dtype != ms.float32:
        return self._self_norm(x)
    return self.fused_rms_norm(x, self.weight, self.eps_tensor)


def _fused_silu(self, x):
    """LlamaSiLU.construct on the fused kernel (float32; other dtypes keep MindFormers' SiLU primitive)."""
    if x.dtype == ms.float32:
        return self.fused_silu(x)
    return self.silu(x)


def fuse(network) -> int:
    """Run MindFormers' LlamaRMSNorm (its own-ops path) and LlamaSiLU cells under `network` on the fused kernels
    when their input is float32, wrap its RotaryEmbedding children in FusedRotary and LLamaAttention's two
    Transpose primitives in FusedHeadTranspose. Returns the number of cells changed: 0 without the library, or when
    done before."""
    if library() is None:
        return 0
    changed = 0
    for _, cell in list(network.cells_and_names()):
        kind = type(cell).__name__
        done = getattr(getattr(cell, "rms_norm", None), "__func__", None) is _fused_rms_norm
        if kind == "LlamaRMSNorm" and cell.self_define and not done:
            cell.eps_tensor = ms.Tensor([cell.eps], ms.float32)
            cell.fused_rms_norm = rms_norm()
            cell.rms_norm = types.MethodType(_fused_rms_norm, cell)
            changed += 1
        elif kind == "LlamaSiLU" and "construct" not in vars(cell):
            cell.fused_silu = silu()
            cell.construct = types.MethodType(_fused_silu, cell)
            changed += 1
        elif kind == "LLamaAttention":
            for name in ("transpose", "merger_head_transpose"):
                if isinstance(getattr(cell, name, None), Primitive):
                    setattr(cell, name, FusedHeadTranspose(getattr(cell, name)))
                    changed += 1
        for name, child in list(cell.name_cells().items()):
            if type(child).__name__ == "RotaryEmbedding" and not isinstance(cell, FusedRotary):
                setattr(cell, name, FusedRotary(child))
                changed += 1
    return changed
