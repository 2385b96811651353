"""Bad input through the real CLI: one line on stderr naming the culprit, exit code 2, nothing written."""
import json
import os

import pytest

GOOD = """\
stage: sft
output_dir: {out}
model: {{path: tiny}}
data: {{train: {train}, max_length: 48}}
train: {{batch_size: 2, max_steps: 2}}
"""


def make_case(tmp_path, assets, name):
    """Returns (config path, overrides, expected text in the error)."""
    out = tmp_path / "run"
    train = f"{assets}/demo_sft_train.jsonl"
    cfg = tmp_path / "cfg.yaml"
    body, overrides, expected = GOOD.format(out=out, train=train), [], None
    bad_data = tmp_path / "bad.jsonl"
    if name == "unknown_key":
        body += "trainer: {lr: 1}\n"; expected = "unknown config key trainer"
    elif name == "wrong_type":
        overrides = ["train.batch_size=many"]; expected = "train.batch_size (in command line): expected an integer"
    elif name == "out_of_range":
        body = body.replace("max_length: 48", "max_length: 2"); expected = "data.max_length"
    elif name == "missing_data_file":
        overrides = ["data.train=nowhere.jsonl"]; expected = "data file not found: nowhere.jsonl"
    elif name == "missing_model_dir":
        overrides = ["model.path=/nonexistent/model"]; expected = "model.path"
    elif name == "model_dir_without_meta":
        (tmp_path / "notamodel").mkdir()
        overrides = [f"model.path={tmp_path / 'notamodel'}"]; expected = "not a mindtune model directory"
    elif name == "malformed_row":
        bad_data.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "a", "output": \n')
        overrides = [f"data.train={bad_data}"]; expected = f"{bad_data}:2: invalid JSON"
    elif name == "missing_field":
        bad_data.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "only"}\n')
        overrides = [f"data.train={bad_data}"]; expected = f"{bad_data}:2: missing field 'output'"
    elif name == "bad_yaml":
        body += "train: [oops\n"; expected = "invalid yaml"
    elif name == "missing_base":
        body = "base: ../nowhere.yaml\n" + body; expected = "base file not found"
    elif name == "bad_override":
        overrides = ["train.max_steps"]; expected = "not of the form dotted.key=value"
    elif name == "bf16_on_cpu":
        overrides = ["train.precision=bf16"]; expected = "bf16 has no CPU kernels"
    elif name == "unknown_stage":
        overrides = ["stage=rlhf"]; expected = "stage (in command line): 'rlhf' is not one of"
    elif name == "packing_on_cpu":
        overrides = ["data.packing=true"]; expected = "data.packing"
    elif name == "bad_lora_targets":
        overrides = ["peft.method=lora", "peft.target_modules=[nothing_matches]"]
        expected = "peft.target_modules"
    elif name == "parallel_without_launcher":
        overrides = ["parallel.data_parallel=2"]; expected = "launch it with scripts/msrun_launcher.sh --workers 2"
    elif name == "corrupt_checkpoint":
        ck = out / "checkpoints" / "step_000001"
        ck.mkdir(parents=True)
        (ck / "state.safetensors").write_bytes(b"not a safetensors file")
        (ck / "trainer_state.json").write_text(json.dumps({"step": 1}))
        expected = "checkpoint"
    cfg.write_text(body)
    return str(cfg), overrides, expected, out


CASES = ["unknown_key", "wrong_type", "out_of_range", "missing_data_file", "missing_model_dir",
         "model_dir_without_meta", "malformed_row", "missing_field", "bad_yaml", "missing_base", "bad_override",
         "bf16_on_cpu", "unknown_stage", "packing_on_cpu", "bad_lora_targets", "parallel_without_launcher",
         "corrupt_checkpoint"]


@pytest.mark.parametrize("name", CASES)
def test_bad_input_gives_one_line_and_exit_2(cli, tmp_path, assets, name):
    cfg, overrides, expected, out = make_case(tmp_path, assets, name)
    before = sorted(os.listdir(out)) if out.exists() else None
    code, stdout, stderr = cli("train", cfg, *overrides)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, stderr
    assert len(lines) == 1 and lines[0].startswith("mindtune train: error: "), stderr
    assert expected in lines[0], lines[0]
    assert "Traceback" not in stderr
    if name not in ("bad_lora_targets",):  # the LoRA pattern is only known to match nothing once the model is built
        after = sorted(os.listdir(out)) if out.exists() else None
        assert after == before, "a rejected run must not write into output_dir"


def test_validate_reports_the_same_errors(cli, tmp_path, assets):
    cfg, overrides, expected, _ = make_case(tmp_path, assets, "missing_field")
    code, stdout, stderr = cli("validate", cfg, *overrides)
    assert code == 2 and expected in stderr
    cfg, overrides, _, _ = make_case(tmp_path, assets, "unknown_key")
    code, _, stderr = cli("validate", str(tmp_path / "nope.yaml"))
    assert code == 2 and "config file not found" in stderr
