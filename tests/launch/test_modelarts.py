"""The ModelArts entry: the msrun command from a faked job environment, the rank table it converts, data and
output sync through (a stand-in for) moxing, and the training's exit status passed through."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from mindtune.errors import ConfigError
from mindtune.launch import modelarts
from mindtune.launch.modelarts import ModelArtsJob, launch_command

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SAMPLE = os.path.join(HERE, "samples", "jobstart_hccl.json")

ENV = {"MA_NUM_HOSTS": "2", "VC_TASK_INDEX": "1", "MA_NUM_GPUS": "8", "MA_JOB_DIR": "/home/ma-user/job",
       "VC_WORKER_HOSTS": "job-abc-worker-0.job-abc,job-abc-worker-1.job-abc", "RANK_TABLE_FILE": SAMPLE}


def test_job_from_environment():
    job = ModelArtsJob.from_env(ENV)
    assert (job.num_hosts, job.task_index, job.npus_per_host, job.workers) == (2, 1, 8, 16)
    assert job.master == "job-abc-worker-0.job-abc" and job.rank_table == SAMPLE


def test_msrun_command_for_node_1(tmp_path):
    job = ModelArtsJob.from_env(ENV)
    table = modelarts.prepare_rank_table(job, str(tmp_path))
    assert json.loads(open(table).read())["version"] == "1.0"
    cmd = launch_command(job, ["mindtune", "train", "run.yaml"], master_port=9001, log_dir="/cache/log",
                         rank_table=table)
    assert cmd[:2] == ["bash", modelarts.LAUNCHER]
    opts = dict(zip(cmd[2:cmd.index("--"):2], cmd[3:cmd.index("--"):2]))
    assert opts == {"--workers": "16", "--local-workers": "8", "--master-port": "9001", "--log-dir": "/cache/log",
                    "--join": "true", "--cluster-timeout": "1800", "--master-addr": "job-abc-worker-0.job-abc",
                    "--node-rank": "1", "--rank-table": table}
    assert cmd[cmd.index("--") + 1:] == ["mindtune", "train", "run.yaml"]


def test_single_node_job_needs_no_master():
    job = ModelArtsJob.from_env({"MA_NUM_GPUS": "8"})
    cmd = launch_command(job, ["x.py"], log_dir="/l")
    assert "--master-addr" not in cmd and "--node-rank" not in cmd and cmd[cmd.index("--workers") + 1] == "8"


def test_the_launcher_accepts_the_command(tmp_path):
    """The command the entry builds passes the launcher's own checks (dry run)."""
    job = ModelArtsJob.from_env(ENV)
    cmd = launch_command(job, ["mindtune", "train", "run.yaml"], log_dir=str(tmp_path), master_port=9002)
    proc = subprocess.run(cmd[:2] + ["--dry-run"] + cmd[2:], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "MINDTUNE_PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr
    assert "--node_rank 1" in proc.stdout and "--master_addr job-abc-worker-0.job-abc" in proc.stdout


@pytest.mark.parametrize("env, phrase", [
    ({"MA_NUM_HOSTS": "2"}, "VC_WORKER_HOSTS is not set"),
    ({"MA_NUM_HOSTS": "3", "VC_WORKER_HOSTS": "a,b"}, "lists 2 hosts"),
    ({"MA_NUM_HOSTS": "2", "VC_WORKER_HOSTS": "a,b", "VC_TASK_INDEX": "2"}, "outside 0..1"),
    ({"MA_NUM_GPUS": "eight"}, "MA_NUM_GPUS='eight' is not an integer"),
    ({"MA_NUM_GPUS": "0"}, "must be at least 1"),
    ({"RANK_TABLE_FILE": "/nonexistent.json"}, "does not exist"),
])
def test_bad_environment(env, phrase):
    with pytest.raises(ConfigError, match=None) as info:
        ModelArtsJob.from_env(env)
    assert phrase in str(info.value)


def test_rank_table_must_match_the_job(tmp_path):
    job = ModelArtsJob.from_env({**ENV, "MA_NUM_GPUS": "4"})
    with pytest.raises(ConfigError, match="lists 16 devices but the job has 2 x 4 = 8"):
        modelarts.prepare_rank_table(job, str(tmp_path))


class FakeMox:
    """Stands in for moxing: records copies and performs them locally (obs://b/x -> ROOT/b/x)."""
    def __init__(self, root):
        self.root, self.calls = root, []
        self.file = self

    def local(self, url):
        return os.path.join(self.root, url[len("obs://"):]) if url.startswith("obs://") else url

    def copy_parallel(self, src, dst):
        self.calls.append((src, dst))
        shutil.copytree(self.local(src), self.local(dst), dirs_exist_ok=True)


def fake_launcher(tmp_path, code):
    """A launcher that records its arguments, writes a file into the run dir, and exits with `code`."""
    path = tmp_path / "launcher.sh"
    path.write_text("#!/usr/bin/env bash\n"
                    f"echo \"$@\" > {tmp_path}/launcher_args.txt\n"
                    "for a in \"$@\"; do case $a in output_dir=*) mkdir -p \"${a#output_dir=}\"; "
                    "echo done > \"${a#output_dir=}/metrics.jsonl\";; esac; done\n"
                    f"exit {code}\n")
    return str(path)


@pytest.mark.parametrize("code", [0, 5])
def test_entry_syncs_data_and_outputs_and_returns_training_status(tmp_path, monkeypatch, code):
    mox = FakeMox(str(tmp_path / "obs"))
    (tmp_path / "obs" / "bucket" / "data").mkdir(parents=True)
    (tmp_path / "obs" / "bucket" / "data" / "train.jsonl").write_text("{}\n")
    monkeypatch.setattr(modelarts, "LAUNCHER", fake_launcher(tmp_path, code))
    monkeypatch.setattr(modelarts, "launch_command", _with_default_launcher(modelarts.launch_command))
    env = {"MA_NUM_GPUS": "2"}
    out = tmp_path / "cache" / "output"
    rc = modelarts.main(["--data-url", "obs://bucket/data", "--data-dir", str(tmp_path / "cache" / "data"),
                         "--train-url", "obs://bucket/out", "--output-dir", str(out), "--",
                         "mindtune", "train", "run.yaml"], env=env, mox=mox)
    assert rc == code
    assert (tmp_path / "cache" / "data" / "train.jsonl").exists()
    assert mox.calls == [("obs://bucket/data", str(tmp_path / "cache" / "data")), (str(out), "obs://bucket/out")]
    assert (tmp_path / "obs" / "bucket" / "out" / "run" / "metrics.jsonl").exists()   # outputs even on failure
    args = (tmp_path / "launcher_args.txt").read_text().split()
    assert args[-4:] == ["mindtune", "train", "run.yaml", f"output_dir={out / 'run'}"]


def _with_default_launcher(fn):
    def wrapped(*a, **kw):
        kw["launcher"] = modelarts.LAUNCHER
        return fn(*a, **kw)
    return wrapped


def test_obs_without_moxing_is_a_clear_error(tmp_path, capsys):
    rc = modelarts.main(["--data-url", "obs://bucket/data", "--output-dir", str(tmp_path), "--",
                         "mindtune", "train", "x.yaml"], env={"MA_NUM_GPUS": "1"})
    assert rc == 2 and "moxing is not importable" in capsys.readouterr().err


def test_entry_script_dry_run(tmp_path):
    env = {**os.environ, **ENV, "MINDTUNE_PYTHON": sys.executable, "MINDTUNE_SKIP_SET_ENV": "1"}
    proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "modelarts_entry.sh"), "--output-dir",
                           str(tmp_path), "--dry-run", "--", "mindtune", "train", "run.yaml"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "node 1 of 2" in proc.stdout and "--node-rank 1" in proc.stdout
    assert (tmp_path / "rank_table_v1.json").exists()


def test_rank_table_is_read_once_its_status_is_completed(tmp_path):
    """ModelArts writes jobstart_hccl.json with status "initializing" first; the entry waits for "completed"."""
    table = json.load(open(SAMPLE))
    path = tmp_path / "jobstart_hccl.json"
    path.write_text(json.dumps({**table, "status": "initializing", "group_list": []}))
    polls = []

    def sleep(seconds):          # ModelArts completes the file on the third look
        polls.append(seconds)
        if len(polls) == 1:
            path.write_text('{"status": "initializ')               # caught half-written
        if len(polls) == 2:
            path.write_text(json.dumps(table))

    job = ModelArtsJob.from_env({**ENV, "RANK_TABLE_FILE": str(path)})
    out = modelarts.prepare_rank_table(job, str(tmp_path), sleep=sleep)
    assert len(polls) == 2 and json.load(open(out))["server_count"] == "2"

    path.write_text(json.dumps({**table, "status": "initializing"}))
    clock = iter(range(0, 1000, 30))
    with pytest.raises(ConfigError, match=r"jobstart_hccl.json: the rank table's status is still 'initializing' "
                                          r"after 90 s, not 'completed'"):
        modelarts.wait_for_rank_table(str(path), timeout=90, sleep=lambda s: None, clock=lambda: next(clock))


def test_servers_are_ranked_by_pod_index_not_file_order(tmp_path):
    from mindtune.launch import ranktable

    table = json.load(open(SAMPLE))
    instances = table["group_list"][0]["instance_list"]
    assert [i["pod_name"] for i in instances] == ["job-abc-worker-0", "job-abc-worker-1"]
    table["group_list"][0]["instance_list"] = instances[::-1]             # worker-1 listed first
    v10 = ranktable.convert_v01(table)
    assert [s["server_id"] for s in v10["server_list"]] == ["10.10.0.11", "10.10.0.12"]
    assert [d["rank_id"] for d in v10["server_list"][0]["device"]] == [str(r) for r in range(8)]
    assert v10["server_list"][0]["device"][0]["device_ip"] == "192.1.0.10"   # device 0 of pod 0 is rank 0


def test_modelarts_appended_data_and_train_urls_are_mapped(tmp_path, monkeypatch):
    """ModelArts appends --data_url=... --train_url=... to the boot command, after `-- mindtune train ...`."""
    mox = FakeMox(str(tmp_path / "obs"))
    (tmp_path / "obs" / "bucket" / "data").mkdir(parents=True)
    (tmp_path / "obs" / "bucket" / "data" / "train.jsonl").write_text("{}\n")
    monkeypatch.setattr(modelarts, "LAUNCHER", fake_launcher(tmp_path, 0))
    monkeypatch.setattr(modelarts, "launch_command", _with_default_launcher(modelarts.launch_command))
    out = tmp_path / "cache" / "output"
    rc = modelarts.main(["--data-dir", str(tmp_path / "cache" / "data"), "--output-dir", str(out), "--",
                         "mindtune", "train", "run.yaml", "--data_url=obs://bucket/data",
                         "--train_url", "obs://bucket/out"], env={"MA_NUM_GPUS": "2"}, mox=mox)
    assert rc == 0
    assert mox.calls == [("obs://bucket/data", str(tmp_path / "cache" / "data")), (str(out), "obs://bucket/out")]
    args = (tmp_path / "launcher_args.txt").read_text().split()
    assert args[-4:] == ["mindtune", "train", "run.yaml", f"output_dir={out / 'run'}"]
    assert modelarts.split_appended(["a", "--data_url=x", "b", "--train-url=y"]) == (["a", "b"],
                                                                                    {"data_url": "x", "train_url": "y"})
