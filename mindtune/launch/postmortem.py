"""After msrun: which ranks failed, and how. Used by scripts/msrun_launcher.sh.

python -m mindtune.launch.postmortem STATUS_DIR LOG_DIR MSRUN_OUTPUT  -> prints one line per failed rank
"""
import os
import re
import signal
import sys

_PID_FAIL = re.compile(r"Worker process (\d+) exit with exception\. Error code: (-?\d+)")


def _read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def describe_code(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def failures(status_dir: str, log_dir: str, msrun_output: str = "") -> list:
    """One message per failed rank: first the rank msrun saw fail (by pid), then ranks whose own exit status
    was non-zero. Ranks msrun killed afterwards are not blamed."""
    ranks = {}
    if os.path.isdir(status_dir):
        for name in os.listdir(status_dir):
            m = re.fullmatch(r"rank_(\d+)\.(pid|exit)", name)
            if m:
                ranks.setdefault(int(m.group(1)), {})[m.group(2)] = _read(os.path.join(status_dir, name))
    by_pid = {v.get("pid"): r for r, v in ranks.items() if v.get("pid")}
    out, blamed = [], set()
    for pid, code in _PID_FAIL.findall(msrun_output or ""):
        rank = by_pid.get(pid)
        who = f"rank {rank}" if rank is not None else f"worker pid {pid}"
        log = os.path.join(log_dir, f"worker_{rank}.log") if rank is not None else log_dir
        out.append(f"{who} {describe_code(int(code))} (log: {log})")
        blamed.add(rank)
    for rank in sorted(ranks):
        code = ranks[rank].get("exit")
        if rank in blamed or code in (None, "0"):
            continue
        out.append(f"rank {rank} {describe_code(int(code))} (log: {os.path.join(log_dir, f'worker_{rank}.log')})")
    return out


def main(argv) -> int:
    if len(argv) != 3:
        print("usage: python -m mindtune.launch.postmortem STATUS_DIR LOG_DIR MSRUN_OUTPUT_FILE", file=sys.stderr)
        return 2
    status_dir, log_dir, output_file = argv
    for line in failures(status_dir, log_dir, _read(output_file) or ""):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
