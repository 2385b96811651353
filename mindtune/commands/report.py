"""mindtune report RUN_DIR: plot a run's metrics.jsonl (loss, eval loss, lr, grad norm, stage metrics)."""
import os

from mindtune.engine.metrics import read_metrics
from mindtune.errors import MindtuneError

PANELS = [("loss", ("loss", "eval_loss")), ("learning rate", ("lr",)), ("gradient norm", ("grad_norm",)),
          ("throughput (tokens/s)", ("tokens_per_s",))]


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
    extra = sorted({k for r in rows for k in r} - {"step", "skipped", "loss_scale"}
                   - {name for _, names in PANELS for name in names})
    panels = PANELS + [(name, (name,)) for name in extra]
    output = args.output or os.path.join(args.run_dir, "report.png")
    plot(rows, panels, output, title=os.path.basename(os.path.abspath(args.run_dir)))
    last = rows[-1]
    print(f"{len(rows)} logged steps, last step {last['step']}: "
          + ", ".join(f"{k}={last[k]:.4g}" for k in ("loss", "eval_loss") if last.get(k) is not None))
    print(f"plot: {output}")
    return 0


def plot(rows, panels, output, title=""):
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    cols = 2
    n_rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(n_rows, cols, figsize=(10, 3.2 * n_rows), squeeze=False)
    for ax, (label, names) in zip(axes.flat, panels):
        for name in names:
            points = [(r["step"], r[name]) for r in rows if r.get(name) is not None]
            if points:
                ax.plot(*zip(*points), marker="o" if name.startswith("eval_") else None, markersize=3, label=name)
        ax.set_title(label)
        ax.set_xlabel("step")
        if len(names) > 1:
            ax.legend()
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(output, dpi=90)
    plt.close(fig)
