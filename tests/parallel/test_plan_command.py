"""`mindtune plan` end to end through its run() and the CLI entry: table, --json, --output, errors."""
import argparse
import json
import os
import subprocess
import sys

import pytest
import yaml

from mindtune.commands import plan as plan_cmd
from mindtune.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse(*argv):
    parser = argparse.ArgumentParser()
    plan_cmd.register(parser.add_subparsers())
    return parser.parse_args(["plan", *argv])


def test_table_lists_plans_with_memory_breakdown(capsys):
    rc = plan_cmd.run(parse("--model", "llama2-7b", "--devices", "8", "--hardware", "910b", "--peft", "lora",
                            "--seq-length", "4096"))
    out = capsys.readouterr().out
    assert rc == 0
    assert "tok/s/NPU" in out and "frozen weights" in out and "activations" in out
    first_row = [l for l in out.splitlines() if l.strip().startswith("1 ")][0].split()
    assert first_row[1:4] == ["8", "1", "1"]          # dp8/mp1/pp1, as MindFormers publishes for 7B LoRA


def test_json_and_output_file(tmp_path, capsys):
    out_file = tmp_path / "plan.yaml"
    rc = plan_cmd.run(parse("--model", "llama2-13b", "--devices", "16", "--hardware", "910b", "--seq-length",
                            "4096", "--global-batch", "64", "--json", "--output", str(out_file)))
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert data["fits"] and data["best"]["global_batch"] == 64
    par = data["best"]["parallel"]
    assert par["data_parallel"] * par["model_parallel"] * par["pipeline_stage"] == 16
    written = yaml.safe_load(out_file.read_text())
    assert written["parallel"] == par and written["train"] == data["best"]["train"]
    assert out_file.read_text().startswith("# Written by")


def test_output_is_a_valid_base_for_a_run_config(tmp_path, capsys):
    from mindtune.config import load_config
    from mindtune.parallel import check_config

    out_file = tmp_path / "plan.yaml"
    assert plan_cmd.run(parse("--model", "llama2-7b", "--devices", "8", "--hardware", "910a", "--seq-length",
                              "2048", "--output", str(out_file))) == 0
    run = tmp_path / "run.yaml"
    run.write_text(f"base: {out_file.name}\nmodel: {{path: llama2-7b}}\ndevice: ascend\nhardware: 910a\n"
                   f"data: {{max_length: 2048}}\n")
    config = load_config(str(run))
    assert config.parallel.device_num == 8
    assert check_config(config) == []


def test_nothing_fits_exits_1_with_suggestion(capsys):
    rc = plan_cmd.run(parse("--model", "llama2-70b", "--devices", "8", "--hardware", "910a", "--seq-length", "4096"))
    out = capsys.readouterr().out
    assert rc == 1
    assert "no strategy fits" in out and "smallest changes that fit" in out and "use 64 devices" in out


def test_plan_reads_a_run_config(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("model: {path: llama2-13b}\nstage: rm\npeft: {method: lora, rank: 8, target_modules: [wq, wv]}\n"
                   "data: {max_length: 1024}\ndevice: ascend\nhardware: 910a\n")
    assert plan_cmd.run(parse("--model", str(cfg), "--devices", "8", "--json")) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["stage"], data["peft"], data["seq_length"], data["hardware"]) == ("rm", "lora", 1024, "910a")


@pytest.mark.parametrize("argv, phrase", [
    (["--model", "llama2-7b", "--devices", "12", "--seq-length", "4096"], "whole 8-NPU servers"),
    (["--model", "nosuch", "--devices", "8", "--seq-length", "4096"], "neither a preset"),
    (["--model", "llama2-7b", "--devices", "8"], "--seq-length is required"),
    (["--model", "llama2-7b", "--devices", "8", "--seq-length", "4096", "--peft", "qlora"], "--peft 'qlora'"),
    (["--model", "llama2-7b", "--devices", "8", "--seq-length", "4096", "--global-batch", "0"], "--global-batch 0"),
    (["--model", "llama2-7b", "--devices", "8", "--seq-length", "4096", "--hardware", "910a",
      "--param-dtype", "bf16"], "no bf16"),
])
def test_bad_arguments_raise_config_error(argv, phrase):
    with pytest.raises(ConfigError, match=None) as info:
        plan_cmd.run(parse(*argv))
    assert phrase in str(info.value)


def test_cli_prints_one_line_error_and_exits_2():
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-m", "mindtune.cli", "plan", "--model", "llama2-7b", "--devices", "12",
                           "--seq-length", "4096"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "whole 8-NPU servers" in proc.stderr
