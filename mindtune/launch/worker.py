"""msrun runs this in every process: it records which rank runs under which pid and how it ended, then runs
the real target (a script, or `-m module`) in the same process.

msrun reports a failed worker only by pid and kills the others with SIGKILL, so without this record the
launcher could not say which rank failed. Files, in $MINDTUNE_STATUS_DIR (the launcher sets it):
    rank_<R>.pid      "<pid>" written at start
    rank_<R>.exit     "<exit code>" written at a normal or exceptional exit (absent if the process was killed)
msrun's scheduler process runs the target too (MS_ROLE=MS_SCHED); it is not a rank and records nothing.
"""
import os
import runpy
import sys
import traceback

from mindtune.atomic import atomic_write


def _record(name: str, text: str):
    folder = os.environ.get("MINDTUNE_STATUS_DIR")
    rank = os.environ.get("RANK_ID")
    if not folder or rank is None or os.environ.get("MS_ROLE") == "MS_SCHED":
        return
    with atomic_write(os.path.join(folder, f"rank_{rank}.{name}")) as f:
        f.write(text)


def main(argv) -> int:
    if not argv:
        print("usage: worker.py SCRIPT.py [ARGS...] | -m MODULE [ARGS...]", file=sys.stderr)
        return 2
    _record("pid", str(os.getpid()))
    code = 0
    try:
        if argv[0] == "-m":
            sys.argv = argv[1:]
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(argv)
            sys.path.insert(0, os.path.dirname(os.path.abspath(argv[0])))
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, (int, type(None))):
            print(exc.code, file=sys.stderr)
    except BaseException:  # noqa: B902 - any failure of the target is this rank's failure
        traceback.print_exc()
        code = 1
    _record("exit", str(code))
    return code


if __name__ == "__main__":
    # this file's folder must not shadow top-level modules of the target
    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
        sys.path.pop(0)
    sys.stdout.flush()
    sys.exit(main(sys.argv[1:]))
