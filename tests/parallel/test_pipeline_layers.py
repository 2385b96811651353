"""Uneven pipeline splits: mindtune sets MindFormers' `offset`, and MindFormers' own LayerSetting (built without
compiling) accepts every strategy the planner ranks for the presets."""
import pytest

from mindtune.models.spec import PRESETS, get_preset
from mindtune.parallel import PlanRequest, Workload, get_hardware, search
from mindtune.parallel.layers import layers_per_stage, pipeline_offset


def layer_setting(num_layers, pp, offset=None):
    """MindFormers' LayerSetting as LlamaModel builds it from the LlamaConfig mindtune makes (`llama_config`);
    `offset` replaces the config's offset."""
    from dataclasses import replace

    from mindformers.parallel_core.training_graph.transformer.utils import LayerSetting
    from mindtune.config.schema import ParallelConfig
    from mindtune.device import resolve_profile
    from mindtune.models.build import llama_config

    spec = replace(get_preset("tiny"), num_layers=num_layers)
    cfg = llama_config(spec, resolve_profile("cpu"), 64, 1, ParallelConfig(pipeline_stage=pp, micro_batch_num=pp))
    return LayerSetting(cfg.num_layers, cfg.offset if offset is None else offset, cfg.parallel_config,
                        cfg.pp_interleave_num, cfg.start_stage, cfg.stage_num)


def test_offset_of_the_uneven_splits_the_issue_names():
    assert pipeline_offset(40, 16) == [0] + [1] * 8 + [0] * 7             # Llama-2-13B, pp16: 2 or 3 layers
    assert layers_per_stage(40, 16) == [2] + [3] * 8 + [2] * 7
    assert pipeline_offset(28, 8) == [0, 1, 1, 1, 1, 0, 0, 0]             # Qwen2.5-7B, pp8: 3 or 4 layers
    assert pipeline_offset(32, 8) == 0 and pipeline_offset(30, 1) == 0
    assert pipeline_offset(5, 2) == [0, 1]                                 # the head stage before the embedding
    for layers, pp in ((40, 16), (28, 8), (7, 4), (30, 16), (80, 3)):
        assert sum(layers_per_stage(layers, pp)) == layers and max(layers_per_stage(layers, pp)) == -(-layers // pp)


def test_mindformers_refuses_an_uneven_split_without_offset():
    with pytest.raises(ValueError, match="sum of `offset`"):
        layer_setting(40, 16, 0)


def ranked_splits():
    """(preset, num_layers, pp) of every strategy the planner ranks for the presets on 8-64 NPUs."""
    found = set()
    for name in ("llama2-7b", "llama2-13b", "llama2-70b", "qwen2.5-7b"):
        spec = get_preset(name)
        for hw_name, devices, peft in (("910b", 8, "lora"), ("910b", 16, "none"), ("910b", 64, "none"),
                                       ("910a", 32, "lora")):
            hw = get_hardware(hw_name)
            w = Workload(spec, 4096, peft=peft, compute_dtype="float16" if hw_name == "910a" else "bfloat16",
                         flash_attention=True)
            for plan in search(PlanRequest(w, hw, devices, micro_batch_sizes=(1,))).plans:
                found.add((name, spec.num_layers, plan.strategy.pp))
    return sorted(found)


def test_mindformers_accepts_every_ranked_pipeline_split():
    splits = ranked_splits()
    assert ("llama2-13b", 40, 16) in splits and ("qwen2.5-7b", 28, 8) in splits   # uneven splits are ranked
    for name, layers, pp in splits:
        setting = layer_setting(layers, pp)                                    # raises if MindFormers refuses
        assert setting.layer_list.reshape(-1).tolist() == layers_per_stage(layers, pp), (name, pp)
        assert len(setting.pp_ids) == layers and sorted(set(setting.pp_ids)) == list(range(pp)), (name, pp)
    assert {n for n, _, _ in splits} == {"llama2-7b", "llama2-13b", "llama2-70b", "qwen2.5-7b"}
    assert PRESETS["qwen2.5-7b"].num_layers == 28


def test_llama_config_carries_the_offset():
    from mindtune.config.schema import ParallelConfig
    from mindtune.device import resolve_profile
    from mindtune.models.build import llama_config

    spec = get_preset("qwen2.5-7b")
    par = ParallelConfig(data_parallel=1, pipeline_stage=8, micro_batch_num=8)
    assert llama_config(spec, resolve_profile("cpu"), 64, 1, par).offset == [0, 1, 1, 1, 1, 0, 0, 0]
    assert llama_config(spec, resolve_profile("cpu"), 64, 1, ParallelConfig(pipeline_stage=4,
                                                                             micro_batch_num=4)).offset == 0
