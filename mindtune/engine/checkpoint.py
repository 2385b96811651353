"""Atomic checkpoints in RUN_DIR/checkpoints/step_NNNNNN/.

A checkpoint is written into a hidden temporary directory, flushed, then renamed into place: a kill at any
moment leaves either the previous checkpoints alone or the new one complete. Only directories that carry
`trainer_state.json` are considered by `latest`.
"""
import json
import os
import re
import shutil

import numpy as np

from mindtune.engine.faults import maybe_kill
from mindtune.errors import CheckpointError

STATE = "state.safetensors"
TRAINER_STATE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step_(\d{6,})$")


def checkpoint_root(run_dir: str) -> str:
    return os.path.join(run_dir, "checkpoints")


def list_checkpoints(run_dir: str):
    """[(step, path)] of complete checkpoints, oldest first."""
    root = checkpoint_root(run_dir)
    if not os.path.isdir(root):
        return []
    found = []
    for name in os.listdir(root):
        match = _STEP_DIR.match(name)
        if match and os.path.isfile(os.path.join(root, name, TRAINER_STATE)):
            found.append((int(match.group(1)), os.path.join(root, name)))
    return sorted(found)


def latest_checkpoint(run_dir: str):
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def _fsync_dir(path: str):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(run_dir: str, step: int, tensors: dict, trainer_state: dict, keep: int):
    from safetensors.numpy import save_file

    root = checkpoint_root(run_dir)
    os.makedirs(root, exist_ok=True)
    final = os.path.join(root, f"step_{step:06d}")
    tmp = os.path.join(root, f".step_{step:06d}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, os.path.join(tmp, STATE))
    maybe_kill("in_save", step)
    with open(os.path.join(tmp, TRAINER_STATE), "w", encoding="utf-8") as f:
        json.dump(trainer_state, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(tmp)
    if os.path.exists(final):
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(root)
    for _, old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: str):
    """(tensors, trainer_state) of a checkpoint directory."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        with open(os.path.join(path, TRAINER_STATE), encoding="utf-8") as f:
            state = json.load(f)
        return load_file(os.path.join(path, STATE)), state
    except (OSError, ValueError, SafetensorError) as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable: {exc}") from None


def verify_checkpoint(path: str):
    """Read a checkpoint's headers (not its tensors), so a broken one is reported before a run starts."""
    from safetensors import SafetensorError, safe_open

    try:
        with open(os.path.join(path, TRAINER_STATE), encoding="utf-8") as f:
            json.load(f)
        with safe_open(os.path.join(path, STATE), framework="np") as f:
            f.keys()
    except (OSError, ValueError, SafetensorError) as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable: {exc}") from None


def clean_partial(run_dir: str):
    """Remove temporary directories a killed save left behind."""
    root = checkpoint_root(run_dir)
    if os.path.isdir(root):
        for name in os.listdir(root):
            if name.startswith(".step_") and name.endswith(".tmp"):
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)
