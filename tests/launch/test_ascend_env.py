"""ascend_env/: set_env.sh finds CANN and applies a profile; preflight.sh reports checks from (faked) npu-smi
and hccn_tool, fails on a bad device, and says plainly when the tools are absent."""
import os
import stat
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SET_ENV = os.path.join(ROOT, "ascend_env", "set_env.sh")
PREFLIGHT = os.path.join(ROOT, "ascend_env", "preflight.sh")
BASE_PATH = "/usr/bin:/bin"


def tool(path, body):
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def bash(script, env, cwd=None):
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, cwd=cwd,
                          env={"PATH": BASE_PATH, "HOME": env.pop("HOME", "/nonexistent"), **env})


def fake_cann(tmp_path):
    home = tmp_path / "Ascend" / "ascend-toolkit" / "latest"
    home.mkdir(parents=True)
    (home.parent / "set_env.sh").write_text("export FAKE_CANN_LOADED=1\n")
    return str(home)


def test_set_env_without_cann_says_so_and_keeps_the_shell(tmp_path):
    p = bash(f"source {SET_ENV}; echo still-here rc=$?; echo HCCL=${{HCCL_CONNECT_TIMEOUT:-unset}}", {})
    assert "still-here rc=0" in p.stdout and "HCCL=unset" in p.stdout
    assert "CANN not found" in p.stderr


def test_set_env_sources_cann_and_applies_910b_profile(tmp_path):
    env = {"ASCEND_HOME_PATH": fake_cann(tmp_path), "HCCL_EXEC_TIMEOUT": "99"}
    p = bash(f"source {SET_ENV} --profile 910b; echo cann=$FAKE_CANN_LOADED overflow=$MS_ASCEND_CHECK_OVERFLOW_MODE "
             "connect=$HCCL_CONNECT_TIMEOUT exec=$HCCL_EXEC_TIMEOUT hw=$MINDTUNE_HARDWARE", env)
    assert "cann=1 overflow=INFNAN_MODE connect=1800 exec=99 hw=910b" in p.stdout, p.stderr   # user's value wins


def test_set_env_auto_profile_reads_npu_smi(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool(bin_dir / "npu-smi", "echo '| 0     910A      | OK  |'\n")
    env = {"ASCEND_HOME_PATH": fake_cann(tmp_path), "PATH": f"{bin_dir}:{BASE_PATH}"}
    p = subprocess.run(["bash", "-c", f"source {SET_ENV}; echo hw=$MINDTUNE_HARDWARE mode=$MS_ASCEND_CHECK_OVERFLOW_MODE"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert "hw=910a mode=SATURATION_MODE" in p.stdout, p.stderr


def test_set_env_print_and_bad_profile(tmp_path):
    env = {"ASCEND_HOME_PATH": fake_cann(tmp_path)}
    p = bash(f"bash {SET_ENV} --print --profile 910a", dict(env))
    assert p.returncode == 0 and "export MINDTUNE_HARDWARE=910a" in p.stdout and p.stdout.startswith("source ")
    p = bash(f"source {SET_ENV} --profile 910c; echo rc=$?", dict(env))
    assert "rc=2" in p.stdout and "unknown profile '910c'" in p.stderr


def fake_tools(tmp_path, bad_health=None, bad_link=None, hbm=1, dup_ip=False):
    npu = tool(tmp_path / "npu-smi", f"""
d=$5
case "$3" in
  health) if [ "$d" = "{bad_health}" ]; then echo "        Health Status : Critical"; else echo "        Health Status : OK"; fi ;;
  usages) echo "        HBM Capacity(MB)  : 65536"; echo "        HBM Usage Rate(%) : {hbm}" ;;
esac
""")
    hccn = tool(tmp_path / "hccn_tool", f"""
d=$2
case "$3" in
  -link) if [ "$d" = "{bad_link}" ]; then echo "link status: DOWN"; else echo "link status: UP"; fi ;;
  -net_health) echo "net health status: Success" ;;
  -ip) if [ "{int(dup_ip)}" = 1 ]; then echo "ipaddr:192.168.0.1"; else echo "ipaddr:192.168.$d.1"; fi; echo "netmask:255.255.255.0" ;;
esac
""")
    return {"NPU_SMI": npu, "HCCN_TOOL": hccn}


def preflight(tmp_path, *args, env=None):
    return subprocess.run(["bash", PREFLIGHT, "--min-free-gb", "0", "--port", "18931", "--disk-path", str(tmp_path),
                           *args], capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ["PATH"], **(env or {})})


def test_preflight_healthy_server_passes(tmp_path):
    p = preflight(tmp_path, "--devices", "4", env=fake_tools(tmp_path))
    assert p.returncode == 0, p.stdout
    assert p.stdout.count("[ OK ] npu") == 4 * 5 and "all checks passed" in p.stdout


@pytest.mark.parametrize("kw, phrase", [
    ({"bad_health": "2"}, "[FAIL] npu 2 health 'Critical'"),
    ({"bad_link": "1"}, "[FAIL] npu 1 link 'DOWN'"),
    ({"hbm": 60}, "[FAIL] npu 0 HBM 60% used"),
    ({"dup_ip": True}, "[FAIL] npu 1 repeats device IP 192.168.0.1 of npu 0"),
])
def test_preflight_reports_a_bad_device(tmp_path, kw, phrase):
    p = preflight(tmp_path, "--devices", "4", env=fake_tools(tmp_path, **kw))
    assert p.returncode == 1 and phrase in p.stdout, p.stdout


def test_preflight_without_tools_is_plain(tmp_path):
    env = {"NPU_SMI": str(tmp_path / "none"), "HCCN_TOOL": str(tmp_path / "none")}
    p = preflight(tmp_path, env=env)
    assert p.returncode == 0 and "[SKIP] npu-smi not found: no Ascend driver on this host" in p.stdout
    p = preflight(tmp_path, "--require-npu", env=env)
    assert p.returncode == 1 and "[FAIL] npu-smi not found" in p.stdout


def test_preflight_busy_port_and_bad_args(tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("", 0))
        s.listen(1)
        port = s.getsockname()[1]
        p = subprocess.run(["bash", PREFLIGHT, "--min-free-gb", "0", "--port", str(port)], capture_output=True,
                           text=True, timeout=60)
    assert p.returncode == 1 and f"[FAIL] port {port} is in use" in p.stdout
    p = subprocess.run(["bash", PREFLIGHT, "--devices", "zero"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "--devices must be 1-16" in p.stderr
    p = subprocess.run(["bash", PREFLIGHT, "--min-free-gb", "999999999", "--disk-path", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "less than 999999999 GB" in p.stdout


def test_ranktable_wrapper(tmp_path):
    p = subprocess.run(["bash", os.path.join(ROOT, "ascend_env", "ranktable.sh"), "convert",
                        os.path.join(ROOT, "tests", "launch", "samples", "jobstart_hccl.json"), str(tmp_path / "o.json")],
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "MINDTUNE_PYTHON": __import__("sys").executable})
    assert p.returncode == 0 and "2 server(s), 16 device(s)" in p.stdout, p.stderr
