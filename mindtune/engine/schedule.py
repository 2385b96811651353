"""Learning-rate schedules, computed on the host from the step number (so resume is exact)."""
import math


def learning_rate(step: int, base_lr: float, max_steps: int, warmup_steps: int = 0, schedule: str = "cosine",
                  min_lr_ratio: float = 0.0) -> float:
    """The lr for optimizer step `step` (0-based): linear warmup, then cosine / linear decay or constant."""
    if warmup_steps and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    span = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    floor = base_lr * min_lr_ratio
    if schedule == "linear":
        return floor + (base_lr - floor) * (1.0 - progress)
    return floor + (base_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
