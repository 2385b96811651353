"""scripts/msrun_launcher.sh: argument checks, the msrun command it builds, and (slow) real 2-worker msrun
runs on CPU: a data-parallel average, a worker exiting non-zero, a killed worker."""
import os
import re
import socket
import subprocess
import sys

import pytest

from mindtune.launch import postmortem

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
LAUNCHER = os.path.join(ROOT, "scripts", "msrun_launcher.sh")


def free_port():
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def launch(*args, timeout=60, env=None):
    full_env = {**os.environ, "MINDTUNE_PYTHON": sys.executable, **(env or {})}
    return subprocess.run(["bash", LAUNCHER, *args], capture_output=True, text=True, env=full_env, timeout=timeout)


def test_dry_run_builds_the_msrun_command(tmp_path):
    proc = launch("--workers", "16", "--local-workers", "8", "--master-addr", "10.0.0.1", "--master-port", "9000",
                  "--node-rank", "1", "--log-dir", str(tmp_path), "--cluster-timeout", "300", "--dry-run",
                  "mindtune", "train", "run.yaml", "train.max_steps=5")
    assert proc.returncode == 0, proc.stderr
    cmd = proc.stdout.split()
    assert cmd[0].endswith("msrun")
    pairs = dict(zip(cmd[1:18:2], cmd[2:19:2]))
    assert pairs["--worker_num"] == "16" and pairs["--local_worker_num"] == "8"
    assert pairs["--master_addr"] == "10.0.0.1" and pairs["--master_port"] == "9000"
    assert pairs["--node_rank"] == "1" and pairs["--join"] == "True" and pairs["--cluster_time_out"] == "300"
    tail = cmd[cmd.index(next(c for c in cmd if c.endswith("mindtune/launch/worker.py"))):]
    assert tail[1:] == ["-m", "mindtune.cli", "train", "run.yaml", "train.max_steps=5"]


@pytest.mark.parametrize("node_rank, tail, expected", [
    ("1", None, "8"),        # node 1 of 2 shows its own first worker, global rank 8 (msrun compares global ranks)
    ("1", "3", "11"),
    ("0", "3", "3"),
    ("1", "none", "16"),     # a rank no worker has: nothing is tailed (8 would be node 1's first worker)
    ("0", "none", "16"),
    ("1", "all", None),      # msrun's default: every local worker
])
def test_tail_log_is_mapped_to_msrun_global_rank(node_rank, tail, expected):
    args = ["--workers", "16", "--local-workers", "8", "--master-addr", "10.0.0.1", "--node-rank", node_rank,
            "--dry-run"] + (["--tail-log", tail] if tail else []) + ["mindtune", "train", "x.yaml"]
    proc = launch(*args)
    assert proc.returncode == 0, proc.stderr
    cmd = proc.stdout.split()
    if expected is None:
        assert "--tail_worker_log" not in cmd
    else:
        assert cmd[cmd.index("--tail_worker_log") + 1] == expected


def test_single_node_defaults(tmp_path):
    script = tmp_path / "job.py"
    script.write_text("print('hi')\n")
    proc = launch("--workers", "2", "--master-port", str(free_port()), "--dry-run", str(script), "a", "b")
    assert proc.returncode == 0, proc.stderr
    assert "--master_addr 127.0.0.1" in proc.stdout and "--node_rank" not in proc.stdout
    assert proc.stdout.rstrip().endswith(f"{script} a b")


@pytest.mark.parametrize("args, phrase", [
    (["--workers", "0", "x.py"], "--workers must be a positive integer, got '0'"),
    (["--workers", "two", "x.py"], "--workers must be a positive integer, got 'two'"),
    (["--workers", "4", "--local-workers", "8", "x.py"], "--local-workers 8 exceeds --workers 4"),
    (["--workers", "12", "--local-workers", "8", "x.py"], "not a multiple of --local-workers 8"),
    (["--workers", "16", "--local-workers", "8", "--node-rank", "0", "x.py"], "need --master-addr"),
    (["--workers", "16", "--local-workers", "8", "--master-addr", "10.0.0.1", "x.py"], "need --node-rank"),
    (["--workers", "16", "--local-workers", "8", "--master-addr", "10.0.0.1", "--node-rank", "2", "x.py"],
     "--node-rank must be an integer in 0..1"),
    (["--workers", "16", "--local-workers", "8", "--master-addr", "127.0.0.1", "--node-rank", "1", "x.py"],
     "loopback"),
    (["--master-port", "80", "x.py"], "--master-port must be an integer in 1024-65535, got '80'"),
    (["--join", "maybe", "x.py"], "--join must be true or false"),
    (["--cluster-timeout", "soon", "x.py"], "--cluster-timeout must be a number of seconds"),
    (["--workers", "2", "--tail-log", "5", "x.py"], "--tail-log must be a local worker index 0..1"),
    (["--frobnicate", "x.py"], "unknown option --frobnicate"),
    (["--workers", "2"], "nothing to run"),
    (["--workers", "2", "/nonexistent/job.py"], "script not found: /nonexistent/job.py"),
    (["--workers", "2", "mindtune"], "'mindtune' needs a command"),
    (["--workers", "2", "--rank-table", "/nonexistent.json", "mindtune", "train", "x"], "--rank-table file not found"),
])
def test_nonsense_is_refused_with_one_line(args, phrase):
    proc = launch(*args)
    assert proc.returncode == 2
    assert phrase in proc.stderr, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and proc.stdout == ""


def test_busy_master_port_is_refused(tmp_path):
    with socket.socket() as s:
        s.bind(("", 0))
        s.listen(1)
        port = s.getsockname()[1]
        proc = launch("--workers", "2", "--master-port", str(port), "mindtune", "train", "x.yaml")
    assert proc.returncode == 2 and f"--master-port {port} is already in use" in proc.stderr


def test_missing_mindspore_python_is_refused():
    proc = launch("--workers", "2", "x.py", env={"MINDTUNE_PYTHON": "/bin/false-python"})
    assert proc.returncode == 2 and "python not found" in proc.stderr


def test_worker_wrapper_records_pid_and_exit(tmp_path):
    script = tmp_path / "job.py"
    script.write_text("import sys\nprint('args', sys.argv[1:])\nsys.exit(int(sys.argv[1]))\n")
    status = tmp_path / "status"
    env = dict(os.environ, MINDTUNE_STATUS_DIR=str(status), RANK_ID="3", MS_ROLE="MS_WORKER",
               PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "mindtune", "launch", "worker.py"), str(script), "7"],
                          capture_output=True, text=True, env=env, timeout=30)
    assert proc.returncode == 7 and "args ['7']" in proc.stdout
    assert (status / "rank_3.exit").read_text() == "7"
    assert (status / "rank_3.pid").read_text().isdigit()
    # the scheduler process runs the script too but is no rank
    env["MS_ROLE"] = "MS_SCHED"
    env["RANK_ID"] = "9"
    subprocess.run([sys.executable, os.path.join(ROOT, "mindtune", "launch", "worker.py"), str(script), "0"],
                   capture_output=True, env=env, timeout=30)
    assert not (status / "rank_9.exit").exists()


def test_postmortem_blames_the_rank_msrun_saw_fail_not_those_it_killed(tmp_path):
    status = tmp_path / "s"
    status.mkdir()
    for rank, pid in ((0, 100), (1, 101), (2, 102)):
        (status / f"rank_{rank}.pid").write_text(str(pid))
    (status / "rank_2.exit").write_text("0")
    out = "[ERROR] ... Worker process 101 exit with exception. Error code: -9.\n"
    assert postmortem.failures(str(status), "/logs", out) == ["rank 1 killed by SIGKILL (log: /logs/worker_1.log)"]
    (status / "rank_0.exit").write_text("4")
    assert postmortem.failures(str(status), "/logs", "") == ["rank 0 exited with code 4 (log: /logs/worker_0.log)"]
    assert postmortem.failures(str(status), "/logs", "Worker process 555 exit with exception. Error code: 1.")[0] \
        .startswith("worker pid 555 exited with code 1")


# -- real msrun runs on CPU (each takes 15-40 s on two cores) ---------------------------------------------
def run_allreduce(tmp_path, mode=""):
    args = ["--workers", "2", "--master-port", str(free_port()), "--log-dir", str(tmp_path / "log"),
            "--cluster-timeout", "120", "--tail-log", "none", os.path.join(HERE, "allreduce_worker.py")]
    # a short heartbeat timeout lets the scheduler notice a dead worker in seconds instead of 30
    return launch(*args, *([mode] if mode else []), timeout=240, env={"MS_NODE_TIMEOUT": "6"})


@pytest.mark.slow
def test_two_worker_data_parallel_average(tmp_path):
    proc = run_allreduce(tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    logs = "".join((tmp_path / "log" / f"worker_{r}.log").read_text() for r in (0, 1))
    results = sorted(re.findall(r"RESULT rank=(\d) world=2 mean=\[([\d., ]+)\]", logs))
    assert results == [("0", "1.5, 1.5, 1.5"), ("1", "1.5, 1.5, 1.5")]      # (1 + 2) / 2 on both ranks


@pytest.mark.slow
def test_worker_exiting_non_zero_is_named(tmp_path):
    proc = run_allreduce(tmp_path, "fail")
    assert proc.returncode != 0
    assert "msrun_launcher: rank 1 exited with code 3" in proc.stderr, proc.stderr[-2000:]
    assert "rank 0" not in proc.stderr.split("msrun_launcher: rank 1")[-1]


@pytest.mark.slow
def test_killed_worker_is_named(tmp_path):
    proc = run_allreduce(tmp_path, "kill")
    assert proc.returncode != 0
    assert "msrun_launcher: rank 1 killed by SIGKILL" in proc.stderr, proc.stderr[-2000:]
