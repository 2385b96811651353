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


# Outputs of a real Atlas 800T A2 (8 x 910B) server, recorded following the formats documented in Huawei's
# "npu-smi Command Reference" (Ascend HDK 23.0, Atlas 800T A2 training server: `npu-smi info`, `npu-smi info -l`,
# `npu-smi info -t board|health|usages -i ID`), the "hccn_tool Interface Reference" of the same release
# (`hccn_tool -i ID -link -g`, `-net_health -g`, `-ip -g`), the CANN toolkit's install record
# (latest/<arch>-linux/ascend_toolkit_install.info) and MindSpore's installation guide (`mindspore.run_check()`).
# The fakes below print these texts verbatim; preflight.sh parses them.
NPU_SMI_INFO = """\
+------------------------------------------------------------------------------------------------+
| npu-smi 23.0.0                   Version: 23.0.0                                               |
+---------------------------+---------------+----------------------------------------------------+
| NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|
| Chip                      | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |
+===========================+===============+====================================================+
| 4     910B3               | OK            | 93.4        38                0    / 0             |
| 0                         | 0000:C1:00.0  | 0           0    / 0          3162 / 65536         |
+===========================+===============+====================================================+
"""
NPU_SMI_LIST = """\
        Total Count                    : {count}
{entries}"""
NPU_SMI_LIST_ENTRY = """
        NPU ID                         : {id}
        Product Name                   : IT21DMDA
        Serial Number                  : 102392193651
        Chip Count                     : 1
"""
NPU_SMI_BOARD = """\
        NPU ID                         : {id}
        Software Version               : 23.0.0
        Firmware Version               : 7.1.0.3.220
        Compatibility                  : {compat}
        Board ID                       : 0x65
        PCB ID                         : A
        BOM ID                         : 1
        PCIe Bus Info                  : 0000:C1:00.0
        Slot ID                        : 0
        Class ID                       : NA
        PCI Vendor ID                  : 0x19E5
        PCI Device ID                  : 0xD802
        Subsystem Vendor ID            : 0x0200
        Subsystem Device ID            : 0x0100
        Chip Count                     : 1
"""
NPU_SMI_HEALTH = """\
        Health Status                  : {health}
        Error Code                     : {code}
        Error Information              : NA
"""
NPU_SMI_USAGES = """\
        Memory Capacity(MB)            : 15037
        Memory Usage Rate(%)           : 3
        Hugepages Total(page)          : 0
        Hugepages Usage Rate(%)        : 0
        Aicore Usage Rate(%)           : 0
        Aicpu Usage Rate(%)            : 0
        Ctrlcpu Usage Rate(%)          : 1
        HBM Capacity(MB)               : 65536
        HBM Usage Rate(%)              : {hbm}
        HBM Bandwidth Usage Rate(%)    : 0
"""
HCCN_LINK = "link status: {link}\n"
HCCN_NET_HEALTH = "net health status: Success\n"
HCCN_IP = "ipaddr:{ip}\nnetmask:255.255.255.0\n"
CANN_INSTALL_INFO = """\
package_name=Ascend-cann-toolkit
version=7.0.0
innerversion=V100R001C15SPC001B233
compatible_version=[V100R001C30],[V100R001C13],[V100R001C15]
arch=aarch64
os=linux
path=/usr/local/Ascend/ascend-toolkit/7.0.0/aarch64-linux
"""
RUN_CHECK = """\
MindSpore version:  2.9.0
The result of multiplication calculation is correct, MindSpore has been installed on platform [Ascend] successfully!
"""


def fake_tools(tmp_path, ids=range(8), bad_health=None, bad_link=None, hbm=1, dup_ip=False, compat="OK",
               run_check=RUN_CHECK):
    """npu-smi, hccn_tool, a CANN install and a python whose run_check answers, printing the recorded texts."""
    texts = tmp_path / "texts"
    texts.mkdir()
    ids = list(ids)
    (texts / "info").write_text(NPU_SMI_INFO)
    (texts / "list").write_text(NPU_SMI_LIST.format(count=len(ids), entries="".join(
        NPU_SMI_LIST_ENTRY.format(id=i) for i in ids)))
    for i in ids:
        bad = str(i) == str(bad_health)
        (texts / f"board{i}").write_text(NPU_SMI_BOARD.format(id=i, compat=compat))
        (texts / f"health{i}").write_text(NPU_SMI_HEALTH.format(health="Critical" if bad else "OK",
                                                                code="0x80E18402" if bad else "NA"))
        (texts / f"usages{i}").write_text(NPU_SMI_USAGES.format(hbm=hbm))
        (texts / f"link{i}").write_text(HCCN_LINK.format(link="DOWN" if str(i) == str(bad_link) else "UP"))
        (texts / f"ip{i}").write_text(HCCN_IP.format(ip="192.168.0.1" if dup_ip else f"192.168.{i}.1"))
    (texts / "net").write_text(HCCN_NET_HEALTH)
    npu = tool(tmp_path / "npu-smi", f"""
t={texts}
case "$*" in
  info) cat $t/info ;;
  "info -l") cat $t/list ;;
  "info -t "*) cat "$t/$3$5" 2>/dev/null || {{ echo "Error: the NPU ID $5 is invalid."; exit 1; }} ;;
esac
""")
    hccn = tool(tmp_path / "hccn_tool", f"""
t={texts}
case "$3" in
  -link) cat "$t/link$2" ;;
  -net_health) cat $t/net ;;
  -ip) cat "$t/ip$2" ;;
esac
""")
    cann = tmp_path / "Ascend" / "ascend-toolkit" / "latest"
    (cann / "aarch64-linux").mkdir(parents=True)
    (cann / "aarch64-linux" / "ascend_toolkit_install.info").write_text(CANN_INSTALL_INFO)
    (texts / "run_check").write_text(run_check)
    python = tool(tmp_path / "python", f"cat {texts}/run_check\n")
    return {"NPU_SMI": npu, "HCCN_TOOL": hccn, "ASCEND_HOME_PATH": str(cann), "MINDTUNE_PYTHON": python}


def preflight(tmp_path, *args, env=None):
    return subprocess.run(["bash", PREFLIGHT, "--min-free-gb", "0", "--port", "18931", "--disk-path", str(tmp_path),
                           *args], capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ["PATH"], **(env or {})})


def test_preflight_healthy_server_passes(tmp_path):
    p = preflight(tmp_path, "--devices", "8", env=fake_tools(tmp_path))
    assert p.returncode == 0, p.stdout
    lines = p.stdout.splitlines()
    assert lines[:3] == ["[ OK ] npu-smi lists 8 NPU(s): 0 1 2 3 4 5 6 7", "[ OK ] driver 23.0.0",
                         "[ OK ] npu 0 firmware 7.1.0.3.220, compatible with the driver"]
    assert "[ OK ] npu 0 HBM 1% used of 65536 MB" in lines
    assert f"[ OK ] CANN 7.0.0 ({tmp_path}/Ascend/ascend-toolkit/latest/aarch64-linux/ascend_toolkit_install.info)" \
        in lines
    assert "[ OK ] MindSpore 2.9.0 run_check passed on Ascend" in lines
    assert p.stdout.count("[ OK ] npu ") == 8 * 6 and lines[-1] == "preflight: all checks passed"


def test_preflight_checks_the_devices_npu_smi_lists(tmp_path):
    """A container that sees NPUs 4-7: those are checked (not 0-3), and a job needing 8 fails."""
    env = fake_tools(tmp_path, ids=[4, 5, 6, 7])
    p = preflight(tmp_path, env=env)
    assert p.returncode == 0, p.stdout
    assert "[ OK ] npu-smi lists 4 NPU(s): 4 5 6 7" in p.stdout and "[ OK ] npu 7 health OK" in p.stdout
    assert "npu 0 " not in p.stdout and "npu 3 " not in p.stdout
    p = preflight(tmp_path, "--devices", "8", env=env)
    assert p.returncode == 1 and "[FAIL] npu-smi lists 4 NPU(s) (4 5 6 7), the job needs 8" in p.stdout


@pytest.mark.parametrize("kw, phrase", [
    ({"bad_health": "2"}, "[FAIL] npu 2 health 'Critical' (npu-smi info -t health -i 2)"),
    ({"bad_link": "1"}, "[FAIL] npu 1 link 'DOWN' (hccn_tool -i 1 -link -g)"),
    ({"hbm": 60}, "[FAIL] npu 0 HBM 60% used (of 65536 MB): another process holds it?"),
    ({"dup_ip": True}, "[FAIL] npu 1 repeats device IP 192.168.0.1 of npu 0"),
    ({"compat": "NOK"}, "[FAIL] npu 0 firmware 7.1.0.3.220: driver compatibility 'NOK' (upgrade the firmware to "
                        "match driver 23.0.0)"),
    ({"run_check": "ImportError: libascendcl.so: cannot open shared object file\n"},
     "[FAIL] MindSpore run_check on Ascend failed: ImportError: libascendcl.so: cannot open shared object file"),
])
def test_preflight_reports_a_bad_device(tmp_path, kw, phrase):
    p = preflight(tmp_path, "--devices", "4", env=fake_tools(tmp_path, ids=range(4), **kw))
    assert p.returncode == 1 and phrase in p.stdout.splitlines(), p.stdout
    assert p.stdout.rstrip().endswith("preflight: FAILED (see the [FAIL] lines)")


def test_preflight_fails_on_a_host_without_npus_unless_host_only(tmp_path):
    env = {"NPU_SMI": str(tmp_path / "none"), "HCCN_TOOL": str(tmp_path / "none"),
           "MINDTUNE_PYTHON": str(tmp_path / "none")}
    p = preflight(tmp_path, env=env)
    assert p.returncode == 1, p.stdout
    assert p.stdout.splitlines()[0] == "[FAIL] npu-smi not found: no Ascend driver on this host; an Ascend job " \
                                       "cannot run here (--host-only checks only this host)"
    assert "all checks passed" not in p.stdout and "[FAIL] CANN toolkit not found" in p.stdout
    p = preflight(tmp_path, "--host-only", env=env)
    assert p.returncode == 0 and p.stdout.splitlines()[0].startswith("[SKIP] NPUs, driver, firmware, CANN")
    assert p.stdout.splitlines()[-1] == "preflight: host checks passed (NPUs, CANN and MindSpore not checked: " \
                                        "--host-only)"


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
