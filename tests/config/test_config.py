"""Config system: base inheritance, typed dotted overrides, and one-line errors naming key, value and file."""
import os

import pytest
import yaml

from mindtune.config import load_config, save_config
from mindtune.errors import ConfigError


def write(path, text):
    path.write_text(text)
    return str(path)


def test_base_inheritance_and_overrides(tmp_path):
    write(tmp_path / "base.yaml", "seed: 7\ntrain: {lr: 1.0e-3, max_steps: 50}\npeft: {method: lora, rank: 4}\n")
    cfg_path = write(tmp_path / "run.yaml", "base: base.yaml\ntrain: {max_steps: 80}\n")
    cfg = load_config(cfg_path, ["train.lr=5e-5", "peft.target_modules=[wq,wv]", "seed=3", "data.train=x.jsonl"])
    assert cfg.train.max_steps == 80          # the run file wins over its base
    assert cfg.train.lr == pytest.approx(5e-5)  # yaml reads 5e-5 as a string; the schema makes it a float
    assert cfg.peft.method == "lora" and cfg.peft.rank == 4  # kept from the base
    assert cfg.peft.target_modules == ["wq", "wv"]
    assert cfg.seed == 3 and cfg.data.train == "x.jsonl"


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, ["train.max_steps=12", "peft.method=lora"])
    out = tmp_path / "config.yaml"
    save_config(cfg, str(out))
    again = load_config(str(out))
    assert again == cfg
    assert yaml.safe_load(out.read_text())["train"]["max_steps"] == 12


KNOWS = "stage, seed, output_dir, device, hardware, model, data, train, peft, parallel, rm, ppo, dpo, grpo"


@pytest.mark.parametrize("text, overrides, expected", [
    ("trian: {lr: 1}\n", [], "unknown config key trian (in {path}); known keys: " + KNOWS),
    ("train: {lr: fast}\n", [], "train.lr (in {path}): expected a number, got 'fast'"),
    ("train: {max_steps: 0}\n", [], "train.max_steps (in {path}): 0 is below the minimum 1"),
    ("peft: {method: qlora}\n", [], "peft.method (in {path}): 'qlora' is not one of none, lora, prefix, ptuning, "
                                    "ptuning_v2, prompt, adapter, bitfit"),
    ("train: {batch_size: 2.5}\n", [], "train.batch_size (in {path}): expected an integer, got 2.5"),
    ("peft: {dropout: 1.0}\n", [], "peft.dropout (in {path}): 1.0 must be below 1.0"),
    ("train: [1, 2]\n", [], "train (in {path}): expected a mapping, got [1, 2]"),
    ("", ["train.lr"], "override 'train.lr' is not of the form dotted.key=value"),
    ("base: missing.yaml\n", [], "{path}: base file not found: missing.yaml"),
    ("train: {lr: [1\n", [], "{path}:2: invalid yaml: expected ',' or ']', but got '<stream end>'"),
])
def test_bad_configs_name_key_and_file(tmp_path, text, overrides, expected):
    """The whole one-line message: the key, the file it came from, the value (not a substring of the path)."""
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError) as err:
        load_config(path, overrides)
    assert str(err.value) == expected.format(path=path)


def test_error_names_the_file_the_key_came_from(tmp_path):
    write(tmp_path / "base.yaml", "train: {warmup_steps: -1}\n")
    path = write(tmp_path / "run.yaml", "base: base.yaml\n")
    with pytest.raises(ConfigError, match=r"train.warmup_steps \(in .*base.yaml\)"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"train.lr \(in command line\)"):
        load_config(path, ["train.warmup_steps=0", "train.lr=-1"])


def test_base_loop_is_refused(tmp_path):
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(str(tmp_path / "a.yaml"))


def test_shipped_run_configs_load():
    root = os.path.join(os.path.dirname(__file__), "..", "..", "run_configs")
    found = 0
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".yaml") and folder != os.path.join(root, "base"):
                path = os.path.join(folder, name)
                first = open(path).readline()
                assert first.startswith("#"), f"{path} needs a header comment with its command"
                load_config(path)
                found += 1
    assert found >= 5
