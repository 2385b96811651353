"""Build MindFormers' Llama under parallel plans on CPU and print the shard strategies its operators carry.

Run by test_strategy_readback.py in a subprocess: the auto-parallel context is process-global, and
MindFormers asks the communication layer for the group size, which is patched here to the plan's device count
(nothing is compiled and no communication happens). Argument: a JSON list of ParallelConfig dicts.
"""
import json
import os
import sys

os.environ.setdefault("GLOG_v", "3")
os.environ.setdefault("LOCAL_DEFAULT_PATH", os.path.join(os.environ.get("TMPDIR", "/tmp"), "mindtune-mindformers"))


def main(plans):
    from dataclasses import replace

    import mindspore as ms

    import mindformers.modules.transformer.op_parallel_config as op_parallel_config
    from mindtune.config.schema import ParallelConfig
    from mindtune.device import resolve_profile
    from mindtune.models.build import build_llama
    from mindtune.models.spec import get_preset
    from mindtune.parallel.context import apply_parallel_context, reset_parallel_context

    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    spec = replace(get_preset("tiny"), num_layers=4, num_kv_heads=4, tie_word_embeddings=False)
    out = []
    for plan in plans:
        par = ParallelConfig(**plan)
        op_parallel_config.D.get_group_size = lambda *a, n=par.device_num: n
        settings = apply_parallel_context(par, par.device_num)
        model = build_llama(spec, resolve_profile("cpu"), seq_length=32, batch_size=2, parallel=par)

        def attrs(prim):
            d = prim.get_attr_dict()
            return {k: d.get(k) for k in ("in_strategy", "out_strategy")}

        layer = model.model.layers[0]
        out.append({
            "settings": settings,
            "context": {"parallel_mode": ms.get_auto_parallel_context("parallel_mode"),
                        "pipeline_stages": ms.get_auto_parallel_context("pipeline_stages"),
                        "enable_parallel_optimizer": ms.get_auto_parallel_context("enable_parallel_optimizer"),
                        "full_batch": ms.get_auto_parallel_context("full_batch")},
            "wq": attrs(layer.attention.wq.matmul), "wk": attrs(layer.attention.wk.matmul),
            "wo": attrs(layer.attention.wo.matmul), "w1": attrs(layer.feed_forward.w1.matmul),
            "w2": attrs(layer.feed_forward.w2.matmul), "embedding": attrs(model.model.tok_embeddings.gather),
            "lm_head": attrs(model.lm_head.matmul),
            "stages": [int(l.pipeline_stage) for l in model.model.layers],
            "recomputed": [getattr(l, "_recompute_cell", None) is not None for l in model.model.layers],
        })
        reset_parallel_context()
    print("READBACK " + json.dumps(out))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
