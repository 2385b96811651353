"""The ModelArts training-job entry: read the job's environment, prepare the rank table and data, run
scripts/msrun_launcher.sh on this node, copy the outputs back, and exit with the training's status.

    python -m mindtune.launch.modelarts [--data-url obs://b/data] [--train-url obs://b/out] -- mindtune train run.yaml

ModelArts starts the same command on every node and describes the job in the environment:
    MA_NUM_HOSTS     nodes in the job                    VC_TASK_INDEX   this node's index (0 is the master)
    VC_WORKER_HOSTS  comma-separated node host names     MA_NUM_GPUS     NPUs per node
    MA_JOB_DIR       the job's code directory            RANK_TABLE_FILE (or /user/config/jobstart_hccl.json):
                                                         the v0.1 rank table, converted to v1.0 for msrun
OBS paths are copied with moxing (`mox.file.copy_parallel`) when it is importable (ModelArts images ship it);
local paths are copied with shutil, so the entry can be tried outside ModelArts.
"""
import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import List, Optional

from mindtune.errors import ConfigError
from mindtune.launch import ranktable

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAUNCHER = os.path.join(REPO, "scripts", "msrun_launcher.sh")
DEFAULT_RANK_TABLE = "/user/config/jobstart_hccl.json"


def _int(env, key, default=None, minimum=0):
    raw = env.get(key)
    if raw in (None, ""):
        if default is None:
            raise ConfigError(f"environment: {key} is not set (is this a ModelArts training job?)")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"environment: {key}={raw!r} is not an integer") from None
    if value < minimum:
        raise ConfigError(f"environment: {key}={value} must be at least {minimum}")
    return value


@dataclass
class ModelArtsJob:
    num_hosts: int
    task_index: int
    hosts: List[str]
    npus_per_host: int
    job_dir: Optional[str]
    rank_table: Optional[str]

    @property
    def master(self) -> str:
        return self.hosts[0]

    @property
    def workers(self) -> int:
        return self.num_hosts * self.npus_per_host

    @classmethod
    def from_env(cls, env=None) -> "ModelArtsJob":
        env = os.environ if env is None else env
        hosts = [h.strip() for h in env.get("VC_WORKER_HOSTS", "").split(",") if h.strip()]
        num_hosts = _int(env, "MA_NUM_HOSTS", default=len(hosts) or 1, minimum=1)
        if num_hosts > 1 and not hosts:
            raise ConfigError(f"environment: MA_NUM_HOSTS={num_hosts} but VC_WORKER_HOSTS is not set")
        if hosts and len(hosts) != num_hosts:
            raise ConfigError(f"environment: MA_NUM_HOSTS={num_hosts} but VC_WORKER_HOSTS lists {len(hosts)} hosts")
        task_index = _int(env, "VC_TASK_INDEX", default=0)
        if task_index >= num_hosts:
            raise ConfigError(f"environment: VC_TASK_INDEX={task_index} is outside 0..{num_hosts - 1}")
        npus = _int(env, "MA_NUM_GPUS", default=8, minimum=1)
        table = env.get("RANK_TABLE_FILE") or (DEFAULT_RANK_TABLE if os.path.isfile(DEFAULT_RANK_TABLE) else None)
        if table and not os.path.isfile(table):
            raise ConfigError(f"environment: RANK_TABLE_FILE={table} does not exist")
        return cls(num_hosts, task_index, hosts or ["127.0.0.1"], npus, env.get("MA_JOB_DIR"), table)


def wait_for_rank_table(path: str, timeout: float = 600.0, poll: float = 1.0, sleep=time.sleep,
                        clock=time.monotonic) -> dict:
    """ModelArts writes the v0.1 rank table in steps (status "initializing", then "completed" once every pod's
    devices are in): read it until its status is completed, as ModelArts' own boot scripts do."""
    deadline, status = clock() + timeout, None
    while True:
        try:
            table = ranktable.load(path)
            status = table.get("status", "completed")
            if status == "completed":
                return table
        except ConfigError as exc:    # half-written JSON while ModelArts updates it
            status = f"unreadable ({exc})"
        if clock() >= deadline:
            raise ConfigError(f"{path}: the rank table's status is still {status!r} after {timeout:g} s, "
                              "not 'completed'")
        sleep(poll)


def prepare_rank_table(job: ModelArtsJob, out_dir: str, timeout: float = 600.0, sleep=time.sleep) -> Optional[str]:
    """The job's rank table as v1.0 under out_dir (converted from ModelArts' v0.1 once it is complete), or None
    without one."""
    if not job.rank_table:
        return None
    table = ranktable.convert_v01(wait_for_rank_table(job.rank_table, timeout, sleep=sleep))
    problems = ranktable.validate(table)
    if problems:
        raise ConfigError(f"{job.rank_table}: {'; '.join(problems)}")
    devices = sum(len(s["device"]) for s in table["server_list"])
    if devices != job.workers:
        raise ConfigError(f"{job.rank_table}: lists {devices} devices but the job has "
                          f"{job.num_hosts} x {job.npus_per_host} = {job.workers}")
    path = os.path.join(out_dir, "rank_table_v1.json")
    ranktable.save(table, path)
    return path


def launch_command(job: ModelArtsJob, target: List[str], *, master_port: int = 8118, log_dir: str,
                   cluster_timeout: int = 1800, rank_table: Optional[str] = None,
                   launcher: str = LAUNCHER) -> List[str]:
    """The msrun_launcher.sh command this node runs."""
    cmd = ["bash", launcher, "--workers", str(job.workers), "--local-workers", str(job.npus_per_host),
           "--master-port", str(master_port), "--log-dir", log_dir, "--join", "true",
           "--cluster-timeout", str(cluster_timeout)]
    if job.num_hosts > 1:
        cmd += ["--master-addr", job.master, "--node-rank", str(job.task_index)]
    if rank_table:
        cmd += ["--rank-table", rank_table]
    return cmd + ["--"] + list(target)


def _is_remote(path: str) -> bool:
    return path.startswith(("obs://", "s3://"))


def sync(src: str, dst: str, mox=None):
    """Copy a directory between OBS and the node (moxing), or between local paths."""
    if mox is None:
        try:
            import moxing as mox  # noqa: F811 - ModelArts images ship it
        except ImportError:
            mox = None
    if mox is not None:
        mox.file.copy_parallel(src, dst)
        return
    if _is_remote(src) or _is_remote(dst):
        raise ConfigError(f"cannot copy {src} -> {dst}: moxing is not importable here (run in a ModelArts image, "
                          "or copy the data yourself and pass local paths)")
    if not os.path.isdir(src):
        raise ConfigError(f"cannot copy {src}: not a directory")
    shutil.copytree(src, dst, dirs_exist_ok=True)


def with_output_dir(target: List[str], output_dir: str) -> List[str]:
    """`mindtune train CONFIG ...` writes its run under output_dir unless the command already names one."""
    if target[:2] == ["mindtune", "train"] and not any(a.startswith("output_dir=") for a in target):
        return target + [f"output_dir={output_dir}"]
    return target


# ModelArts appends the job's "data path" and "training output path" to the boot command as
# --data_url=obs://... --train_url=obs://... (after our `-- mindtune train ...`).
APPENDED = ("data_url", "train_url")


def split_appended(target: List[str]):
    """(the command without ModelArts' appended --data_url/--train_url arguments, {name: value})."""
    kept, found, i = [], {}, 0
    while i < len(target):
        arg = target[i]
        name = arg[2:].split("=", 1)[0].replace("-", "_") if arg.startswith("--") else None
        if name in APPENDED:
            if "=" in arg:
                found[name] = arg.split("=", 1)[1]
            elif i + 1 < len(target):
                found[name] = target[i + 1]
                i += 1
            i += 1
            continue
        kept.append(arg)
        i += 1
    return kept, found


def main(argv=None, env=None, mox=None) -> int:
    parser = argparse.ArgumentParser(prog="modelarts_entry", description="run a mindtune job on ModelArts")
    parser.add_argument("--data-url", "--data_url", help="OBS (or local) directory copied to --data-dir before "
                                                          "training")
    parser.add_argument("--data-dir", default="/cache/data")
    parser.add_argument("--train-url", "--train_url", help="OBS (or local) directory that receives --output-dir "
                                                            "afterwards")
    parser.add_argument("--output-dir", default="/cache/output")
    parser.add_argument("--master-port", type=int, default=8118)
    parser.add_argument("--cluster-timeout", type=int, default=1800)
    parser.add_argument("--dry-run", action="store_true", help="print the launch command and exit")
    parser.add_argument("target", nargs=argparse.REMAINDER, help="-- mindtune train run.yaml [overrides]")
    args = parser.parse_args(argv)
    target = args.target[1:] if args.target[:1] == ["--"] else args.target
    target, appended = split_appended(target)
    args.data_url = args.data_url or appended.get("data_url")
    args.train_url = args.train_url or appended.get("train_url")
    try:
        if not target:
            raise ConfigError("nothing to run: end the options with -- mindtune train run.yaml")
        job = ModelArtsJob.from_env(env)
        run_dir = os.path.join(args.output_dir, "run")
        log_dir = os.path.join(args.output_dir, f"msrun_log_node{job.task_index}")
        os.makedirs(args.output_dir, exist_ok=True)
        table = prepare_rank_table(job, args.output_dir)
        cmd = launch_command(job, with_output_dir(target, run_dir), master_port=args.master_port, log_dir=log_dir,
                             cluster_timeout=args.cluster_timeout, rank_table=table)
        print(f"modelarts: node {job.task_index} of {job.num_hosts}, {job.npus_per_host} NPUs each, master "
              f"{job.master}" + (f", rank table {table}" if table else ""), flush=True)
        if args.dry_run:
            print(" ".join(cmd))
            return 0
        if args.data_url:
            print(f"modelarts: copying {args.data_url} -> {args.data_dir}", flush=True)
            sync(args.data_url, args.data_dir, mox)
    except ConfigError as exc:
        print(f"modelarts: error: {exc}", file=sys.stderr)
        return 2
    rc = subprocess.call(cmd)    # the launcher waits for msrun, which waits for every worker
    if args.train_url:
        # node 0 holds the run (rank 0 writes it); every node contributes its msrun logs
        src = args.output_dir if job.task_index == 0 else log_dir
        dst = args.train_url if job.task_index == 0 else f"{args.train_url.rstrip('/')}/{os.path.basename(log_dir)}"
        try:
            sync(src, dst, mox)
            print(f"modelarts: copied {src} -> {dst}", flush=True)
        except Exception as exc:  # noqa: BLE001 - a failed upload must not hide the training's status
            print(f"modelarts: error: copying outputs to {dst} failed: {exc}", file=sys.stderr)
            rc = rc or 1
    print(f"modelarts: training exited with status {rc}", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
