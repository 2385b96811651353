"""Rank tables: ModelArts v0.1 -> v1.0 on a sample file, generation from hccn_tool output, merge, validate."""
import copy
import json
import os

import pytest

from mindtune.errors import ConfigError
from mindtune.launch import ranktable

SAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "samples")


def sample_v01():
    return ranktable.load(os.path.join(SAMPLES, "jobstart_hccl.json"))


def test_convert_v01_sample():
    v01 = sample_v01()
    assert ranktable.version(v01) == "0.1"
    t = ranktable.convert_v01(v01)
    assert t["version"] == "1.0" and t["server_count"] == "2" and t["status"] == "completed"
    assert [s["server_id"] for s in t["server_list"]] == ["10.10.0.11", "10.10.0.12"]
    first, second = (s["device"] for s in t["server_list"])
    assert [d["device_id"] for d in first] == [str(i) for i in range(8)]          # sorted by device id
    assert [d["rank_id"] for d in first + second] == [str(i) for i in range(16)]  # server by server
    # each device keeps its own address from the v0.1 table
    src = {(i["server_id"], d["device_id"]): d["device_ip"]
           for i in v01["group_list"][0]["instance_list"] for d in i["devices"]}
    for s in t["server_list"]:
        for d in s["device"]:
            assert d["device_ip"] == src[(s["server_id"], d["device_id"])]
    assert ranktable.validate(t) == []


def test_cli_convert_and_validate(tmp_path, capsys):
    out = tmp_path / "rt.json"
    assert ranktable.main(["convert", os.path.join(SAMPLES, "jobstart_hccl.json"), str(out)]) == 0
    assert json.loads(out.read_text())["server_count"] == "2"
    assert ranktable.main(["validate", str(out)]) == 0
    assert "ok" in capsys.readouterr().out


def test_validate_finds_problems():
    t = ranktable.convert_v01(sample_v01())
    bad = copy.deepcopy(t)
    bad["server_count"] = "3"
    bad["server_list"][1]["device"][0]["device_ip"] = bad["server_list"][0]["device"][0]["device_ip"]
    bad["server_list"][1]["device"][1]["rank_id"] = "0"
    bad["server_list"][0]["device"][2]["device_ip"] = "300.1.1.1"
    problems = ranktable.validate(bad)
    assert any("server_count is '3'" in p for p in problems)
    assert any("repeats device_ip" in p for p in problems)
    assert any("rank_id values must be 0..15" in p for p in problems)
    assert any("invalid device_ip '300.1.1.1'" in p for p in problems)
    assert ranktable.validate(sample_v01())[0].startswith("version 0.1: convert it")


def test_generate_from_hccn_outputs_and_merge(tmp_path):
    out0, out1, merged = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "all.json"
    hccn = os.path.join(SAMPLES, "hccn")
    assert ranktable.main(["generate", str(out0), "--server-id", "10.0.0.1", "--hccn-dir", hccn]) == 0
    t = json.loads(out0.read_text())
    assert [d["device_ip"] for d in t["server_list"][0]["device"]][:2] == ["192.168.0.100", "192.168.1.101"]
    # a second server's table (same outputs, other addresses), then merge: ranks renumbered 0..15
    other = json.loads(out0.read_text())
    other["server_list"][0]["server_id"] = "10.0.0.2"
    for d in other["server_list"][0]["device"]:
        d["device_ip"] = d["device_ip"].replace("192.168.", "192.169.")
    out1.write_text(json.dumps(other))
    assert ranktable.main(["merge", str(merged), str(out0), str(out1)]) == 0
    m = json.loads(merged.read_text())
    assert m["server_count"] == "2"
    assert [d["rank_id"] for s in m["server_list"] for d in s["device"]] == [str(i) for i in range(16)]
    # merging a table with itself repeats device addresses: refused
    assert ranktable.main(["merge", str(tmp_path / "x.json"), str(out0), str(out0)]) == 2


def test_generate_without_hccn_tool_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert ranktable.main(["generate", str(tmp_path / "o.json"), "--server-id", "10.0.0.1"]) == 2
    assert "hccn_tool not found" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["", "netmask:255.255.255.0", "ipaddr: "])
def test_hccn_parse_errors(text):
    with pytest.raises(ConfigError):
        ranktable.parse_hccn_ip(text)


def test_device_ranges():
    assert ranktable.parse_devices("0-3") == [0, 1, 2, 3]
    assert ranktable.parse_devices("0,2,4") == [0, 2, 4]
    for bad in ("3-1", "a", "0,0"):
        with pytest.raises(ConfigError):
            ranktable.parse_devices(bad)


def test_bad_files(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("{not json")
    with pytest.raises(ConfigError, match="x.json:1: not valid JSON"):
        ranktable.load(str(p))
    with pytest.raises(ConfigError, match="not found"):
        ranktable.load(str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError, match="neither a v1.0"):
        ranktable.version({"foo": 1})
