"""Files written whole or not at all: a crash or kill mid-write leaves the previous file (or none), never a torn
one that a later run would read."""
import contextlib
import os


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w"):
    """`with atomic_write(path) as f:` writes a temporary file beside `path` (this process's own) and, when the
    block ends without an error, flushes it to disk and renames it over `path`; on an error it is removed."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    partial = f"{path}.{os.getpid()}.partial"
    try:
        with open(partial, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
