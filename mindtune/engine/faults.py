"""Crash injection for the resume and atomic-checkpoint tests: a real SIGKILL at a named point.

MINDTUNE_KILL_AT=after_save:10  kills the process right after the step-10 checkpoint is renamed into place;
MINDTUNE_KILL_AT=in_save:20     kills it halfway through writing the step-20 checkpoint.
Unset (always, outside tests), this does nothing.
"""
import os
import signal


def maybe_kill(point: str, step: int):
    if os.environ.get("MINDTUNE_KILL_AT") == f"{point}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)
