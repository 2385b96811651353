"""Bad input through the real CLI (`mindtune.cli.main`): exit code 2, exactly one line on stderr, and that line
is the expected message in full (the key, the file:line, the value), and nothing under the test's directory was
written or changed (the run directory, the data, the config: every file is hashed before and after).

The corpus covers configs, data rows, checkpoints, command-line arguments and model directories.
"""
import hashlib
import json
import os

import numpy as np
import pytest

from mindtune.cli import main

GOOD = """\
stage: sft
output_dir: {out}
model: {{path: tiny}}
data: {{train: {train}, max_length: 48}}
train: {{batch_size: 2, max_steps: 2}}
"""
SFT_ROW = {"instruction": "a", "output": "b"}


def jsonl(*rows):
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


class Case:
    """Files written under tmp, then `argv` (str.format'ed with the paths) and the expected message."""

    def __init__(self, tmp, assets):
        self.tmp, self.assets = tmp, assets
        self.out, self.cfg = tmp / "run", tmp / "cfg.yaml"
        self.body = GOOD.format(out=self.out, train=f"{assets}/demo_sft_train.jsonl")

    def file(self, name, text):
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def model_dir(self, name, **meta):
        from reference.tiny import lively_weights

        from mindtune.models.loading import TINY_TOKENIZER
        from mindtune.models.model_dir import write_model_dir
        from mindtune.models.spec import PRESETS

        path = self.tmp / name
        adapter = "peft" in meta
        weights = {"model.layers.0.attention.wq.lora_a": np.zeros((8, 64), np.float32)} if adapter else \
            lively_weights(PRESETS["tiny"], seed=1)
        write_model_dir(str(path), PRESETS["tiny"], weights, meta=meta or None, tokenizer_dir=TINY_TOKENIZER,
                        adapter=adapter)
        return path


def build(name, c: Case):
    """(argv, expected message after 'mindtune CMD: error: ')."""
    t, a = c.tmp, c.assets
    train = ["train", str(c.cfg)]
    # ---- configs ------------------------------------------------------------------------------------------
    if name == "unknown_key":
        c.body += "trainer: {lr: 1}\n"
        return train, f"unknown config key trainer (in {c.cfg}); did you mean train?"
    if name == "unknown_nested_key":
        return train + ["train.lrate=1"], "unknown config key train.lrate (in command line); known keys: batch_size, " \
            "grad_accum, max_steps, length_buckets, lr, schedule, warmup_steps, min_lr_ratio, weight_decay, " \
            "adam_beta1, adam_beta2, adam_eps, max_grad_norm, precision, loss_scale, loss_scale_window, log_every, " \
            "eval_every, save_every, save_total_limit, resume, resume_changed, graph_mode, compile_cache, eval_metrics, "\
            "eval_max_new_tokens"
    if name == "wrong_type":
        return train + ["train.batch_size=many"], "train.batch_size (in command line): expected an integer, got 'many'"
    if name == "below_minimum_in_file":
        c.body = c.body.replace("max_length: 48", "max_length: 2")
        return train, f"data.max_length (in {c.cfg}): 2 is below the minimum 8"
    if name == "lr_negative":
        return train + ["train.lr=-1"], "train.lr (in command line): -1.0 is below the minimum 0.0"
    if name == "grad_accum_zero":
        return train + ["train.grad_accum=0"], "train.grad_accum (in command line): 0 is below the minimum 1"
    if name == "dropout_one":
        return train + ["peft.method=lora", "peft.dropout=1.0"], "peft.dropout (in command line): 1.0 must be below 1.0"
    if name == "unknown_peft_method":
        return train + ["peft.method=qlora"], "peft.method (in command line): 'qlora' is not one of none, lora, " \
            "prefix, ptuning, ptuning_v2, prompt, adapter, bitfit"
    if name == "unknown_stage":
        return train + ["stage=rlhf"], "stage (in command line): 'rlhf' is not one of "
    if name == "bad_yaml":
        c.body += "train: [oops\n"
        return train, f"{c.cfg}:7: invalid yaml: expected ',' or ']', but got '<stream end>'"
    if name == "top_level_list":
        c.body = "- stage\n- sft\n"
        return train, f"{c.cfg}: the top level must be a mapping of keys, got list"
    if name == "missing_base":
        c.body = "base: ../nowhere.yaml\n" + c.body
        return train, f"{c.cfg}: base file not found: ../nowhere.yaml"
    if name == "missing_config":
        return ["train", str(t / "nope.yaml")], f"config file not found: {t / 'nope.yaml'}"
    if name == "bf16_on_cpu":
        return train + ["train.precision=bf16"], "train.precision: bf16 has no CPU kernels in MindSpore 2.9; use " \
            "fp32 or fp16"
    if name == "ascend_without_npu":
        return train + ["device=ascend"], "device: ascend, but this host has no Ascend NPU (no /dev/davinci* " \
            "device): run on an Ascend server with its driver installed and `source ascend_env/set_env.sh` " \
            "there, or use the CPU"
    if name == "max_length_beyond_positions":
        return train + ["data.max_length=4096"], "data.max_length: 4096 is more than the model's 512 positions"
    if name == "packing_outside_sft":
        return train + ["data.packing=true", "stage=dpo", f"data.train={a}/demo_pref_train.jsonl"], \
            "data.packing: packs SFT rows; stage 'dpo' does not pack, set it to false"
    if name == "packing_with_soft_prompt":
        return train + ["data.packing=true", "peft.method=prompt"], "data.packing: peft.method=prompt puts its " \
            "virtual tokens in front of each sequence, not of each packed row; set data.packing to false"
    if name == "parallel_without_launcher":
        return train + ["parallel.data_parallel=2"], "parallel: the plan needs 2 devices but this process runs " \
            "alone; launch it with scripts/msrun_launcher.sh --workers 2"
    if name == "tensor_parallel_on_cpu":
        return train + ["parallel.model_parallel=2"], "parallel: tensor/pipeline/context parallelism needs " \
            "Ascend (semi-auto parallel does not compile on CPU); on CPU only data_parallel runs, under msrun"
    if name == "sequence_parallel_without_tp":
        return ["validate", str(c.cfg), "model.path=llama2-7b", "device=ascend", "peft.method=lora",
                "data.max_length=4096", "train.batch_size=1", "parallel.use_seq_parallel=true"], \
            "parallel.use_seq_parallel: sequence parallel splits the norm and residual activations along the " \
            "sequence over the model_parallel group; with parallel.model_parallel=1 there is none (set " \
            "model_parallel > 1 or use_seq_parallel=false)"
    # ---- data rows ----------------------------------------------------------------------------------------
    if name == "missing_data_file":
        return train + [f"data.train={t / 'nowhere.jsonl'}"], f"data.train: data file not found: {t / 'nowhere.jsonl'}"
    if name == "data_is_a_directory":
        (t / "dir.jsonl").mkdir()
        return train + [f"data.train={t / 'dir.jsonl'}"], f"data.train: data file not found: {t / 'dir.jsonl'}"
    if name == "invalid_json_row":
        bad = c.file("bad.jsonl", jsonl(SFT_ROW, SFT_ROW, '{"instruction": "a", "output": '))
        return train + [f"data.train={bad}"], f"{bad}:3: invalid JSON (Expecting value at column 32)"
    if name == "missing_field":
        bad = c.file("bad.jsonl", jsonl(SFT_ROW, {"instruction": "only"}))
        return train + [f"data.train={bad}"], f"{bad}:2: missing field 'output'"
    if name == "row_not_an_object":
        bad = c.file("bad.jsonl", jsonl(SFT_ROW, "[1, 2]"))
        return train + [f"data.train={bad}"], f"{bad}:2: expected a JSON object, got list"
    if name == "empty_file":
        bad = c.file("bad.jsonl", "")
        return train + [f"data.train={bad}"], f"{bad}: the file has no rows"
    if name == "unknown_role":
        bad = c.file("bad.jsonl", jsonl(SFT_ROW, {"messages": [{"role": "robot", "content": "x"}]}))
        return train + [f"data.train={bad}"], f"{bad}:2: messages[0] has role 'robot'; expected one of system, " \
            "user, assistant"
    if name == "no_assistant_turn":
        bad = c.file("bad.jsonl", jsonl({"messages": [{"role": "user", "content": "x"}]}))
        return train + [f"data.train={bad}"], f"{bad}:1: 'messages' has no assistant turn to learn from"
    if name == "empty_output":
        bad = c.file("bad.jsonl", jsonl(SFT_ROW, SFT_ROW, {"instruction": "a", "output": ""}))
        return train + [f"data.train={bad}"], f"{bad}:3: field 'output' is empty"
    if name == "bad_eval_row":
        bad = c.file("bad_eval.jsonl", jsonl(SFT_ROW, {"instruction": "a", "output": 3}))
        return train + [f"data.eval={bad}"], f"{bad}:2: field 'output' must be a string, got int"
    if name == "sft_rows_for_rm":
        return train + ["stage=rm"], f"{a}/demo_sft_train.jsonl:1: missing field 'chosen'"
    # ---- checkpoints --------------------------------------------------------------------------------------
    if name in ("corrupt_checkpoint", "checkpoint_of_another_run"):
        from safetensors.numpy import save_file

        from mindtune.config import load_config
        from mindtune.stages.common import run_fingerprint

        ck = c.out / "checkpoints" / "step_000001"
        ck.mkdir(parents=True)
        c.file("run/config.yaml", "kept: as it was\n")
        if name == "corrupt_checkpoint":
            (ck / "state.safetensors").write_bytes(b"not a safetensors file")
            (ck / "trainer_state.json").write_text(json.dumps({"step": 1}))
            return train, f"checkpoint {ck} is unreadable: Error while deserializing header: header too large"
        c.cfg.write_text(c.body)
        saved = dict(run_fingerprint(load_config(str(c.cfg), [])), seed=7)
        save_file({"x": np.zeros(1, np.float32)}, str(ck / "state.safetensors"))
        (ck / "trainer_state.json").write_text(json.dumps({"step": 1, "fingerprint": saved}))
        return train, f"train.resume: the checkpoint {ck} was made by a different run: seed (7 -> 42); use " \
            "another output_dir, or set train.resume_changed=true to continue anyway"
    if name == "resume_never_on_a_used_dir":
        c.file("run/notes.txt", "keep me")
        return train + ["train.resume=never"], f"output_dir: {c.out} is not empty and train.resume is never; " \
            "choose another output_dir or set train.resume=auto"
    # ---- arguments ----------------------------------------------------------------------------------------
    if name == "override_without_value":
        return train + ["train.max_steps"], "override 'train.max_steps' is not of the form dotted.key=value"
    gen = ["generate", "--model", "tiny", "--input", f"{a}/demo_sft_train.jsonl", "--output", str(t / "o.jsonl")]
    if name == "generate_batch_size_zero":
        return gen + ["--batch-size", "0"], "--batch-size must be >= 1 (got 0)"
    if name == "generate_greedy_and_temperature":
        return gen + ["--greedy", "--temperature", "0.5"], "--greedy cannot be combined with " \
            "--temperature/--top-k/--top-p"
    if name == "generate_negative_temperature":
        return gen + ["--temperature", "-1"], "temperature must be > 0 (got -1.0); use greedy decoding instead"
    if name == "generate_missing_input":
        return gen[:4] + [str(t / "none.jsonl")] + gen[5:], f"--input: data file not found: {t / 'none.jsonl'}"
    if name == "generate_on_ascend_without_npu":
        return gen + ["--device", "ascend"], "--device: ascend, but this host has no Ascend NPU (no /dev/davinci* " \
            "device): run on an Ascend server with its driver installed and `source ascend_env/set_env.sh` " \
            "there, or use the CPU"
    if name == "score_negative_max_length":
        return ["score", "--model", "tiny", "--input", "x", "--output", "y", "--max-length", "-1"], \
            "--max-length must be >= 1 (got -1)"
    if name == "merge_without_paths":
        return ["merge-lora"], "merge-lora: give the adapter directory and the output directory " \
            "(mindtune merge-lora RUN_DIR/model OUT_DIR)"
    # ---- model directories --------------------------------------------------------------------------------
    if name == "missing_model_dir":
        return train + [f"model.path={t / 'nomodel'}"], f"model.path: {str(t / 'nomodel')!r} is neither a model " \
            "directory nor a preset "
    if name == "model_dir_without_meta":
        (t / "notamodel").mkdir()
        return train + [f"model.path={t / 'notamodel'}"], f"model.path: {t / 'notamodel'} is not a mindtune model " \
            "directory; convert it with `mindtune convert`"
    if name == "model_meta_invalid_json":
        c.file("badmeta/mindtune_model.json", "{not json")
        return train + [f"model.path={t / 'badmeta'}"], f"{t / 'badmeta' / 'mindtune_model.json'}: invalid JSON at " \
            "line 1: Expecting property name enclosed in double quotes"
    if name == "spec_on_a_model_dir":
        path = c.model_dir("tinydir")
        return train + [f"model.path={path}", "model.spec={num_layers: 1}"], "model.spec: architecture overrides " \
            f"only apply to presets, not to {path}"
    if name == "missing_tokenizer":
        return train + [f"model.tokenizer={t / 'tok.json'}"], f"model.tokenizer: tokenizer not found: {t / 'tok.json'}"
    if name == "adapter_of_another_method":
        path = c.model_dir("adapter", base_model="tiny", peft={"method": "lora", "rank": 8})
        return train + [f"model.path={path}", "peft.method=prefix"], f"peft.method: 'prefix' but {path} is a " \
            "'lora' adapter"
    if name == "unreadable_weights":
        path = c.model_dir("tinydir")
        (path / "model.safetensors").write_bytes(b"garbage")
        return train + [f"model.path={path}"], f"{path / 'model.safetensors'}: unreadable safetensors file " \
            "(Error while deserializing header: header too small)"
    raise AssertionError(name)


CASES = {
    "config": ["unknown_key", "unknown_nested_key", "wrong_type", "below_minimum_in_file", "lr_negative",
               "grad_accum_zero", "dropout_one", "unknown_peft_method", "unknown_stage", "bad_yaml", "top_level_list",
               "missing_base", "missing_config", "bf16_on_cpu", "ascend_without_npu", "max_length_beyond_positions",
               "packing_outside_sft", "packing_with_soft_prompt",
               "parallel_without_launcher", "tensor_parallel_on_cpu", "sequence_parallel_without_tp"],
    "data": ["missing_data_file", "data_is_a_directory", "invalid_json_row", "missing_field", "row_not_an_object",
             "empty_file", "unknown_role", "no_assistant_turn", "empty_output", "bad_eval_row", "sft_rows_for_rm"],
    "checkpoint": ["corrupt_checkpoint", "checkpoint_of_another_run", "resume_never_on_a_used_dir"],
    "argument": ["override_without_value", "generate_batch_size_zero", "generate_greedy_and_temperature",
                 "generate_negative_temperature", "generate_missing_input", "generate_on_ascend_without_npu",
                 "score_negative_max_length", "merge_without_paths"],
    "model_dir": ["missing_model_dir", "model_dir_without_meta", "model_meta_invalid_json", "spec_on_a_model_dir",
                  "missing_tokenizer", "adapter_of_another_method", "unreadable_weights"],
}
KNOWN_BUGS = {}
PREFIX_ONLY = {"unknown_stage", "missing_model_dir"}   # the rest of the line lists the choices


def tree(root) -> dict:
    found = {}
    for dirpath, dirs, files in os.walk(root):
        for name in files + [d + "/" for d in dirs]:
            path = os.path.join(dirpath, name)
            found[os.path.relpath(path, root)] = "dir" if name.endswith("/") else \
                hashlib.sha256(open(path, "rb").read()).hexdigest()
    return found


@pytest.fixture(scope="module", autouse=True)
def tests_on_path():
    import sys

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, here)
    yield
    sys.path.remove(here)


@pytest.mark.parametrize("kind, name", [
    pytest.param(k, n, marks=[pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[n])] if n in KNOWN_BUGS else [])
    for k, names in CASES.items() for n in names])
def test_bad_input_gives_one_line_exit_2_and_changes_nothing(tmp_path, assets, capfd, kind, name):
    case = Case(tmp_path, assets)
    argv, expected = build(name, case)
    if not case.cfg.exists():
        case.cfg.write_text(case.body)
    before = tree(tmp_path)
    capfd.readouterr()
    code = main(argv)
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    head = f"mindtune {argv[0]}: error: "
    if name in PREFIX_ONLY:
        assert lines[0].startswith(head + expected), lines[0]
    else:
        assert lines[0] == head + expected
    assert tree(tmp_path) == before, "a rejected command must not write or change anything"


def test_corpus_size():
    assert sum(len(v) for v in CASES.values()) >= 30


def test_validate_reports_the_same_errors_as_train(tmp_path, assets, capfd):
    for name in ("missing_field", "dropout_one", "unknown_stage", "sft_rows_for_rm"):
        case = Case(tmp_path / name, assets)
        case.tmp.mkdir()
        argv, expected = build(name, case)
        case.cfg.write_text(case.body)
        capfd.readouterr()
        assert main(["validate", *argv[1:]]) == 2
        assert capfd.readouterr().err.strip().startswith(f"mindtune validate: error: {expected}")


def test_validate_and_train_accept_exactly_the_implemented_stages(tmp_path, assets, capfd, monkeypatch):
    """A stage the schema knows but mindtune.stages.STAGES does not implement is refused by both, in one line."""
    import mindtune.stages as stages

    monkeypatch.delitem(stages.STAGES, "rm")
    case = Case(tmp_path, assets)
    case.cfg.write_text(case.body)
    lines = {}
    for command in ("validate", "train"):
        capfd.readouterr()
        assert main([command, str(case.cfg), "stage=rm"]) == 2
        lines[command] = capfd.readouterr().err.strip().splitlines()
    expected = f"stage: 'rm' is not implemented yet; available: {', '.join(stages.STAGES)}"
    assert lines == {c: [f"mindtune {c}: error: {expected}"] for c in ("validate", "train")}
    assert not case.out.exists()
    capfd.readouterr()
    assert main(["validate", str(case.cfg)]) == 0 and ": ok (stage sft" in capfd.readouterr().out
