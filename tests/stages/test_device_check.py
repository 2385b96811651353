"""device=ascend on a host that cannot run it: what is missing (the NPU, or CANN in this shell) in one line, before
anything is written; validate and plan still check an Ascend config on any machine."""
import pytest

from mindtune import device
from mindtune.cli import main
from mindtune.errors import ConfigError


def test_missing_npu_then_unsourced_cann(tmp_path, monkeypatch):
    monkeypatch.setattr(device, "ASCEND_DEVICE_GLOB", str(tmp_path / "davinci[0-9]*"))
    with pytest.raises(ConfigError, match=r"^device: ascend, but this host has no Ascend NPU \(no /dev/davinci\* "):
        device.resolve_profile("ascend")
    (tmp_path / "davinci0").write_text("")                  # an NPU, but CANN's set_env.sh not sourced
    monkeypatch.delenv("ASCEND_OPP_PATH", raising=False)
    with pytest.raises(ConfigError) as err:
        device.resolve_profile("ascend", key="--device")
    assert str(err.value) == "--device: ascend, but CANN is not set up in this shell (ASCEND_OPP_PATH is unset): " \
                             "run `source ascend_env/set_env.sh` first"
    monkeypatch.setenv("ASCEND_OPP_PATH", "/usr/local/Ascend/ascend-toolkit/latest/opp")
    assert device.resolve_profile("ascend").name == "910b"  # both present: the profile resolves
    assert device.resolve_profile("cpu").name == "cpu"      # the CPU never needs either


def test_validate_and_plan_work_on_any_host(tmp_path, assets, capfd):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"stage: sft\ndevice: ascend\nmodel: {{path: tiny}}\ndata: {{train: {assets}/demo_sft_train.jsonl}}\n")
    assert main(["validate", str(cfg)]) == 0
    out = capfd.readouterr().out
    assert "note: device ascend: this host has no Ascend NPU" in out and ": ok (stage sft" in out
    assert main(["plan", "--model", "llama2-7b", "--devices", "8", "--seq-length", "2048"]) == 0
    assert main(["train", str(cfg), f"output_dir={tmp_path / 'run'}"]) == 2
    assert capfd.readouterr().err.startswith("mindtune train: error: device: ascend, but this host has no Ascend NPU")
    assert not (tmp_path / "run").exists()
