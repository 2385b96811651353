"""Run metrics: metrics.jsonl (one JSON object per logged step), TensorBoard scalars when tensorboardX is
importable, and the tqdm progress bar on the terminal."""
import json
import math
import os
import sys

from mindtune.atomic import atomic_write


class MetricsLog:
    """Writes nothing when `enabled` is false (every rank but 0 of a distributed run)."""

    def __init__(self, run_dir: str, resume_step: int = 0, tensorboard: bool = True, enabled: bool = True):
        self.path = os.path.join(run_dir, "metrics.jsonl")
        self.enabled = enabled
        self.file = self.writer = None
        if not enabled:
            return
        self._truncate_after(resume_step)
        self.file = open(self.path, "a", encoding="utf-8")
        self.writer = None
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
                self.writer = SummaryWriter(os.path.join(run_dir, "tensorboard"))
            except ImportError:
                self.writer = None

    def _truncate_after(self, step: int):
        """On resume, drop lines logged after the checkpoint we resume from (they will be logged again)."""
        if not os.path.isfile(self.path):
            return
        kept = [line for line in read_metrics(self.path) if line.get("step", 0) <= step]
        with atomic_write(self.path) as f:
            for row in kept:
                f.write(json.dumps(row) + "\n")

    def log(self, row: dict):
        if not self.enabled:
            return
        # Strict JSON: a non-finite value (an overflowed step's grad norm) is written as null.
        row = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if self.writer is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(key, value, row["step"])

    def close(self):
        if self.file is not None:
            self.file.close()
        if self.writer is not None:
            self.writer.close()


def read_metrics(path: str) -> list:
    rows = []
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError:
                        break  # a torn last line from a kill
    return rows


def progress_bar(total: int, initial: int, desc: str, enabled: bool = True):
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True,
                disable=not enabled or os.environ.get("MINDTUNE_NO_PROGRESS") == "1", file=sys.stderr)
