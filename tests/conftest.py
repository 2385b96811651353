"""Test setup shared by every module: quiet MindSpore/MindFormers before they are imported, the `slow` marker,
and small helpers for running the real CLI."""
import os
import sys

import pytest

os.environ.setdefault("MINDTUNE_NO_PROGRESS", "1")
# one tokenized-data cache for the session (shared by the CLI subprocesses), never the user's ~/.cache/mindtune
_CACHE = None
if "MINDTUNE_CACHE_DIR" not in os.environ:
    import tempfile
    _CACHE = os.environ["MINDTUNE_CACHE_DIR"] = tempfile.mkdtemp(prefix="mindtune-test-cache-")
from mindtune import shims  # noqa: E402

shims.quiet_environment()

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSETS = os.path.join(REPO, "mindtune", "assets")


def pytest_unconfigure(config):
    if _CACHE:
        import shutil
        shutil.rmtree(_CACHE, ignore_errors=True)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: real-model (SmolLM2) or multi-process tests; run with -m slow")


@pytest.fixture(scope="session")
def assets():
    return ASSETS


def run_cli(*args, cwd=None, env=None, timeout=900):
    """Run `python -m mindtune.cli ARGS` in a subprocess: (exit code, stdout, stderr)."""
    import subprocess

    full_env = dict(os.environ, **(env or {}))
    proc = subprocess.run([sys.executable, "-m", "mindtune.cli", *map(str, args)], cwd=cwd or REPO,
                          env=full_env, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="session")
def cli():
    """The CLI runner: cli("train", cfg, "train.max_steps=3") -> (code, stdout, stderr)."""
    return run_cli
