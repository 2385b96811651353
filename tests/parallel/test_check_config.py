"""check_config: what `mindtune validate` and training apply to a run config's parallel section."""
from mindtune.config import load_config
from mindtune.parallel import check_config


def cfg(*overrides):
    return load_config(None, list(overrides))


def test_default_cpu_config_is_ok():
    assert check_config(cfg()) == []


def test_rule_violations_name_the_key():
    problems = check_config(cfg("model.path=llama2-7b", "parallel.model_parallel=3", "device=ascend"))
    assert "parallel.model_parallel=3: num_heads 32 is not divisible by 3" in problems


def test_pipeline_needs_micro_batches():
    problems = check_config(cfg("model.path=llama2-7b", "parallel.pipeline_stage=4", "parallel.micro_batch_num=2"))
    assert any(p.startswith("parallel.micro_batch_num=2") for p in problems)


def test_memory_check_on_ascend_only():
    big = ["model.path=llama2-70b", "data.max_length=4096", "parallel.data_parallel=8"]
    (problem,) = check_config(cfg(*big, "device=ascend", "hardware=910a"))
    assert problem.startswith("parallel: estimated") and "30 GB usable on a 910a" in problem
    assert "mindtune plan" in problem
    assert check_config(cfg(*big, "device=cpu")) == []      # no memory check on cpu


def test_fitting_ascend_config_passes():
    ok = ["model.path=llama2-7b", "data.max_length=4096", "device=ascend", "hardware=910b", "peft.method=lora",
          "parallel.data_parallel=8", "train.batch_size=1"]
    assert check_config(cfg(*ok)) == []
    # the same with a batch far too large does not fit, and the activations are what grew
    (problem,) = check_config(cfg(*ok[:-1], "train.batch_size=16"))
    assert problem.startswith("parallel: estimated ") and " GB per device exceeds the 59 GB usable on a 910b (" \
        in problem, problem
    activations = float(problem.split("activations ")[1].split(",")[0])
    assert activations > 59, problem


def test_sequence_parallel_needs_tensor_parallel():
    base = ["model.path=llama2-7b", "data.max_length=4096", "device=ascend", "peft.method=lora",
            "parallel.data_parallel=8", "train.batch_size=1", "parallel.use_seq_parallel=true"]
    assert check_config(cfg(*base)) == [
        "parallel.use_seq_parallel: sequence parallel splits the norm and residual activations along the sequence "
        "over the model_parallel group; with parallel.model_parallel=1 there is none (set model_parallel > 1 or "
        "use_seq_parallel=false)"]
    tp = ["parallel.data_parallel=2", "parallel.model_parallel=4"]
    assert not [p for p in check_config(cfg(*base, *tp)) if "use_seq_parallel" in p]


def test_unknown_model_is_reported_not_raised():
    (problem,) = check_config(cfg("model.path=/nonexistent/model"))
    assert "neither a preset" in problem
