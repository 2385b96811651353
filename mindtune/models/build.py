"""Build MindFormers' Llama from a ModelSpec and a device profile, and move weights in and out of it.

Weights travel as {MindFormers parameter name: numpy array}; `mindtune.models.model_dir` stores them.
"""
import numpy as np

from mindtune.device import DeviceProfile
from mindtune.errors import CheckpointError
from mindtune.models.spec import ModelSpec


def llama_config(spec: ModelSpec, profile: DeviceProfile, seq_length: int, batch_size: int = 1,
                 parallel=None, param_dtype: str = "float32"):
    """The MindFormers LlamaConfig for `spec` on `profile`. `parallel` is a mindtune ParallelConfig or None."""
    from mindformers.models.llama import LlamaConfig

    parallel_config = {}
    if parallel is not None and (parallel.device_num > 1 or parallel.recompute != "none"):
        parallel_config = dict(data_parallel=parallel.data_parallel, model_parallel=parallel.model_parallel,
                               pipeline_stage=parallel.pipeline_stage, micro_batch_num=parallel.micro_batch_num,
                               context_parallel=parallel.context_parallel,
                               use_seq_parallel=parallel.use_seq_parallel, vocab_emb_dp=parallel.vocab_emb_dp,
                               recompute={"recompute": parallel.recompute == "full",
                                          "select_recompute": parallel.recompute == "selective"})
    kwargs = dict(
        batch_size=batch_size, seq_length=seq_length, hidden_size=spec.hidden_size, num_layers=spec.num_layers,
        num_heads=spec.num_heads, n_kv_heads=spec.num_kv_heads, intermediate_size=spec.intermediate_size,
        vocab_size=spec.vocab_size, rms_norm_eps=spec.rms_norm_eps, theta=spec.rope_theta,
        max_position_embedding=max(spec.max_position, seq_length),
        bos_token_id=spec.bos_token_id, eos_token_id=spec.eos_token_id, pad_token_id=spec.pad_token_id,
        tie_word_embeddings=spec.tie_word_embeddings, qkv_has_bias=spec.qkv_bias,
        compute_dtype=profile.compute_dtype, layernorm_compute_type="float32", softmax_compute_type="float32",
        rotary_dtype="float32", param_init_type=param_dtype, embedding_init_type=param_dtype,
        use_flash_attention=profile.use_flash_attention, fused_rms_norm=profile.fused_rms_norm,
        use_rope_slice=profile.use_rope_slice, use_past=False,
        # is_dynamic: MindFormers then cuts its causal mask to the input's length, so a network built for
        # seq_length also runs shorter batches (length buckets, mindtune.engine.buckets)
        is_dynamic=True,
    )
    if parallel_config:
        from mindtune.parallel.layers import pipeline_offset
        kwargs["parallel_config"] = parallel_config
        kwargs["offset"] = pipeline_offset(spec.num_layers, parallel.pipeline_stage)  # uneven pipeline splits
    return LlamaConfig(**kwargs)


def build_llama(spec: ModelSpec, profile: DeviceProfile, seq_length: int, batch_size: int = 1, parallel=None,
                initialise: bool = True):
    """A MindFormers LlamaForCausalLM, randomly initialised by MindFormers (load weights afterwards).

    initialise=False skips that random initialisation (5 of the 6 s a SmolLM2 build takes on CPU) for a caller
    that sets every parameter next (`load_weights`, strict); MindSpore initialises any parameter still unset when
    the network first runs.
    """
    import contextlib

    from mindformers.models.llama import LlamaForCausalLM
    from mindspore.nn.utils import no_init_parameters

    with contextlib.nullcontext() if initialise else no_init_parameters():
        llama = LlamaForCausalLM(llama_config(spec, profile, seq_length, batch_size, parallel))
    if profile.is_cpu:
        from mindtune import cpu_kernels
        from mindtune.engine import cell_reuse
        from mindtune.shims import cpu_explicit_broadcasts
        cpu_explicit_broadcasts(llama)
        cpu_kernels.fuse(llama)
        # compile one layer for all (engine/cell_reuse.py); mindformers 1.9.0's LLamaDecoderLayer keeps its
        # layer_id from __init__ but its construct never reads it
        cell_reuse.mark_repeated(llama.model.layers, ignore=("layer_id",))
    return llama


def init_std(spec: ModelSpec) -> float:
    """Standard deviation of random_weights' matrices: 1 / sqrt(hidden_size), the fan-in scale.

    Not Llama's 0.02, which suits widths near 2,500: at the tiny demo's width of 128 it left the attention almost
    uniform and its query/key gradients near zero, so the copy the demo has to learn was found in only 6 of 10
    seeds within 350 steps (and seed 0's success hung on float rounding); at 1 / sqrt(128) = 0.088 and the demo's
    lr of 2e-3 all 10 seeds reached 100% by step 100 (bench/README.md, "The demo's initialisation").
    """
    return spec.hidden_size ** -0.5


def random_weights(spec: ModelSpec, seed: int) -> dict:
    """Deterministic initial weights (normal(0, init_std) matrices, unit norms) keyed by MindFormers names.

    Drawn with numpy so that a resumed run rebuilds exactly the same frozen base weights.
    """
    rng = np.random.default_rng(seed)
    h, kv, ffn = spec.hidden_size, spec.num_kv_heads * spec.head_dim, spec.intermediate_size
    std = init_std(spec)

    def normal(*shape):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    weights = {"model.tok_embeddings.embedding_weight": normal(spec.vocab_size, h),
               "model.norm_out.weight": np.ones(h, np.float32)}
    for i in range(spec.num_layers):
        p = f"model.layers.{i}."
        weights.update({
            p + "attention_norm.weight": np.ones(h, np.float32),
            p + "ffn_norm.weight": np.ones(h, np.float32),
            p + "attention.wq.weight": normal(h, h),
            p + "attention.wk.weight": normal(kv, h),
            p + "attention.wv.weight": normal(kv, h),
            p + "attention.wo.weight": normal(h, h),
            p + "feed_forward.w1.weight": normal(ffn, h),
            p + "feed_forward.w2.weight": normal(h, ffn),
            p + "feed_forward.w3.weight": normal(ffn, h),
        })
        if spec.qkv_bias:
            weights.update({p + "attention.wq.bias": np.zeros(h, np.float32),
                            p + "attention.wk.bias": np.zeros(kv, np.float32),
                            p + "attention.wv.bias": np.zeros(kv, np.float32)})
    if not spec.tie_word_embeddings:
        weights["lm_head.weight"] = normal(spec.vocab_size, h)
    return weights


def load_weights(cell, weights: dict, prefix: str = "", strict: bool = True, where: str = "weights"):
    """Copy numpy arrays into the cell's parameters by name (`prefix` + name), checking names and shapes.

    strict: every parameter of the cell under `prefix` must be given (frozen base weights always are).
    """
    import mindspore as ms

    params = {p.name: p for p in cell.get_parameters()}
    for name, array in weights.items():
        param = params.get(prefix + name)
        if param is None:
            raise CheckpointError(f"{where}: tensor {name!r} has no place in the model")
        if tuple(param.shape) != tuple(array.shape):
            raise CheckpointError(f"{where}: tensor {name!r} has shape {tuple(array.shape)}, "
                                  f"the model expects {tuple(param.shape)}")
        param.set_data(ms.Tensor(np.ascontiguousarray(array), dtype=param.dtype))
    if strict:
        missing = [n for n in params if n.startswith(prefix) and n[len(prefix):] not in weights]
        if missing:
            raise CheckpointError(f"{where}: missing tensor(s) {', '.join(missing[:5])}"
                                  + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))


def get_weights(cell, names=None, prefix: str = "") -> dict:
    """numpy copies of the cell's parameters (all, or those named), with `prefix` stripped."""
    out = {}
    for param in cell.get_parameters():
        if not param.name.startswith(prefix):
            continue
        name = param.name[len(prefix):]
        if names is None or name in names:
            out[name] = param.asnumpy().astype(np.float32) if param.dtype != np.float32 else param.asnumpy()
    return out
