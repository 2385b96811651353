"""mindtune report RUN_DIR: plot a run's metrics.jsonl (loss, eval loss, lr, grad norm, stage metrics)."""
import os

from mindtune.engine.metrics import read_metrics
from mindtune.errors import MindtuneError

PANELS = [("loss", ("loss", "eval_loss")), ("learning rate", ("lr",)), ("gradient norm", ("grad_norm",)),
          ("throughput (tokens/s)", ("tokens_per_s",))]
# online RL stages (ppo, grpo) log one row per iteration: these panels, against the iteration
RL_PANELS = [("reward", ("reward", "score_normalised", "eval_score_normalised")), ("KL to the reference",
             ("kl", "eval_kl")), ("value loss", ("value_loss",)), ("response length (tokens)",
             ("response_length", "eval_response_length")), ("policy", ("policy_loss", "clip_fraction", "approx_kl")),
             ("entropy", ("entropy",)), ("seconds per iteration", ("seconds_generating", "seconds_scoring",
                                                                  "seconds_training"))]
TASK_METRICS = ("eval_exact_match", "eval_contains", "eval_rouge1", "eval_rouge2", "eval_rougeL", "eval_bleu",
                "eval_accuracy")


def register(sub):
    p = sub.add_parser("report", help="plot a run's metrics.jsonl to RUN_DIR/report.png and print a summary")
    p.add_argument("run_dir")
    p.add_argument("--output", help="image path (default RUN_DIR/report.png)")
    p.set_defaults(func=run)


def run(args) -> int:
    path = os.path.join(args.run_dir, "metrics.jsonl")
    rows = read_metrics(path)
    if not rows:
        raise MindtuneError(f"{path}: no metrics (not a run directory, or nothing logged yet)")
    base = RL_PANELS + PANELS[:1] if "iteration" in rows[0] else PANELS
    extra = sorted({k for r in rows for k in r} - {"step", "iteration", "skipped", "loss_scale"}
                   - {name for _, names in PANELS + RL_PANELS for name in names})
    task = tuple(name for name in extra if name in TASK_METRICS)   # train.eval_metrics: one panel together
    panels = base + ([("task metrics on data.eval", task)] if task else []) + \
        [(name, (name,)) for name in extra if name not in task]
    output = args.output or os.path.join(args.run_dir, "report.png")
    plot(rows, panels, output, title=os.path.basename(os.path.abspath(args.run_dir)),
         x="iteration" if "iteration" in rows[0] else "step")
    last = rows[-1]
    print(f"{len(rows)} logged steps, last step {last['step']}: "
          + ", ".join(f"{k}={last[k]:.4g}" for k in ("loss", "eval_loss") + task if last.get(k) is not None))
    print(f"plot: {output}")
    return 0


def plot(rows, panels, output, title="", x="step"):
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    cols = 2
    n_rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(n_rows, cols, figsize=(10, 3.2 * n_rows), squeeze=False)
    for ax, (label, names) in zip(axes.flat, panels):
        for name in names:
            points = [(r[x], r[name]) for r in rows if r.get(name) is not None]
            if points:
                ax.plot(*zip(*points), marker="o" if name.startswith("eval_") else None, markersize=3, label=name)
        ax.set_title(label)
        ax.set_xlabel(x)
        if len(names) > 1:
            ax.legend()
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(output, dpi=90)
    plt.close(fig)
