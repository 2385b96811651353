"""mindtune eval --model M --input rows.jsonl [--metrics ...] [--output DIR] [--baseline M0]: task metrics.

Generation rows (alpaca `output`, the last assistant turn of `messages`, or `answer`) are answered by greedy
generation (sampling as in `generate`) and scored with exact_match, contains, rouge, bleu; multiple-choice rows
(`question`, `choices`, `answer`) by the log-likelihood of each choice (accuracy); `perplexity` scores the
references under the model. Writes DIR/predictions.jsonl and DIR/summary.json and prints a table.
"""
import dataclasses
import json
import os
import sys
import time

SHOWN_CHANGES = 10


def register(sub):
    from mindtune.eval.runner import ALL_METRICS

    p = sub.add_parser("eval", help="task metrics of a model on reference rows (exact match, ROUGE, BLEU, "
                                    "multiple-choice accuracy, perplexity); --baseline compares two models")
    p.add_argument("--model", required=True, help="model directory, a run's model/, a run directory or an adapter")
    p.add_argument("--input", required=True, help="JSON Lines of rows with a reference answer, or "
                                                  "{question, choices, answer} multiple-choice rows")
    p.add_argument("--metrics", nargs="+", default=None, metavar="METRIC",
                   help=f"any of {', '.join(ALL_METRICS)} (default: every generation metric; multiple-choice "
                        "rows always give accuracy)")
    p.add_argument("--output", default=None, help="directory for predictions.jsonl and summary.json")
    p.add_argument("--baseline", default=None, help="a second model evaluated on the same rows, for comparison")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--greedy", action="store_true", help="the default unless a sampling option is given")
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N rows")
    p.add_argument("--raw", action="store_true", help="prompts as plain text, without the chat template")
    p.add_argument("--ignore-case", action="store_true", help="exact_match/contains: compare lower-cased")
    p.add_argument("--ignore-punctuation", action="store_true", help="exact_match/contains: drop punctuation")
    p.add_argument("--keep-whitespace", action="store_true",
                   help="exact_match/contains: compare whitespace as is (default: strip and collapse it)")
    p.add_argument("--first-line", action="store_true", help="exact_match/contains: only the prediction's "
                                                             "first non-empty line")
    p.add_argument("--length-normalised", action="store_true",
                   help="multiple choice: rank choices by mean log-probability per token, not the sum")
    p.add_argument("--device", default="cpu", choices=["cpu", "ascend"])
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16"])
    p.set_defaults(func=run)


def options_from_args(args):
    from mindtune.commands.generate import sampling_from_args
    from mindtune.errors import ConfigError
    from mindtune.eval.metrics import GENERATION_METRICS, Normalise
    from mindtune.eval.runner import ALL_METRICS, EvalOptions

    metrics = tuple(args.metrics or GENERATION_METRICS)
    unknown = [m for m in metrics if m not in ALL_METRICS]
    if unknown:
        raise ConfigError(f"--metrics: unknown metric {unknown[0]!r}; choose from {', '.join(ALL_METRICS)}")
    for name in ("max_new_tokens", "batch_size"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(args, name)})")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1 (got {args.limit})")
    norm = Normalise(whitespace=not args.keep_whitespace, case=args.ignore_case,
                     punctuation=args.ignore_punctuation, first_line=args.first_line)
    return EvalOptions(metrics=metrics, norm=norm, max_new_tokens=args.max_new_tokens,
                       sampling=sampling_from_args(args), seed=args.seed, raw=args.raw,
                       length_normalised=args.length_normalised)


def run(args) -> int:
    from mindtune.device import resolve_profile, setup_context
    from mindtune.eval.model import EvalModel
    from mindtune.eval.rows import read_eval_rows
    from mindtune.eval.runner import changed_rows, evaluate, summarise

    opts = options_from_args(args)
    rows = read_eval_rows(args.input, key="--input", limit=args.limit)
    profile = resolve_profile(args.device, precision=args.precision, key="--device")
    models = [EvalModel.load(args.model, profile, args.batch_size, args.seed, key="--model")]
    if args.baseline:
        models.append(EvalModel.load(args.baseline, profile, args.batch_size, args.seed, key="--baseline"))
    setup_context(profile, graph_mode=True, seed=args.seed)

    outcomes = []
    for model in models:
        start = time.time()
        results = evaluate(model, rows, opts)
        outcomes.append((model, results, summarise(rows, results), time.time() - start))
        model.release()

    (model, results, summary, seconds) = outcomes[0]
    report = {"model": args.model, "input": args.input, "rows": len(rows), "metrics": summary,
              "seconds": round(seconds, 1),
              "options": {"metrics": list(opts.metrics), "max_new_tokens": opts.max_new_tokens,
                          "greedy": opts.sampling.greedy, "raw": opts.raw,
                          "normalise": dataclasses.asdict(opts.norm),
                          "length_normalised": opts.length_normalised}}
    records = [dict(row.row, line=row.where, **result) for row, result in zip(rows, results)]
    if len(outcomes) > 1:
        _, base_results, base_summary, base_seconds = outcomes[1]
        changes = changed_rows(rows, results, base_results)
        report.update(baseline={"model": args.baseline, "metrics": base_summary, "seconds": round(base_seconds, 1)},
                      difference={k: summary[k] - base_summary[k] for k in summary if k in base_summary},
                      **changes)
        for record, base in zip(records, base_results):
            record.update(baseline_prediction=base.get("prediction"), baseline_scores=base.get("scores"))
    print(format_table(report))
    if args.output:
        from mindtune.data.formats import write_rows

        os.makedirs(args.output, exist_ok=True)
        write_rows(os.path.join(args.output, "predictions.jsonl"), records)
        with open(os.path.join(args.output, "summary.json"), "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1, ensure_ascii=False)
        print(f"mindtune eval: {len(rows)} rows -> {args.output}/predictions.jsonl, summary.json", file=sys.stderr)
    return 0


def format_table(report: dict) -> str:
    """The terminal table: one line per metric; with a baseline, both models and the difference."""
    metrics, base = report["metrics"], report.get("baseline")
    lines = [f"{report['rows']} rows from {report['input']} (scores in %, perplexity as is)"]
    if base is None:
        lines.append(f"{'metric':<14}{'value':>10}")
        lines += [f"{name:<14}{_fmt(name, value):>10}" for name, value in metrics.items()]
        lines.append(f"model: {report['model']} ({report['seconds']:.1f}s)")
        return "\n".join(lines)
    lines.append(f"{'metric':<14}{'model':>10}{'baseline':>10}{'change':>10}")
    for name in metrics:
        b = base["metrics"].get(name)
        change = report["difference"].get(name)
        lines.append(f"{name:<14}{_fmt(name, metrics[name]):>10}{_fmt(name, b):>10}"
                     f"{'' if change is None else _fmt(name, change, signed=True):>10}")
    lines.append(f"model: {report['model']} ({report['seconds']:.1f}s); baseline: {base['model']} "
                 f"({base['seconds']:.1f}s)")
    for key, label in (("wrong_to_right", "wrong -> right"), ("right_to_wrong", "right -> wrong")):
        wheres = report.get(key, [])
        lines.append(f"{label}: {len(wheres)} rows{' (' + _lines(wheres) + ')' if wheres else ''}")
    return "\n".join(lines)


def _lines(wheres) -> str:
    """`lines 1, 4, 9 of rows.jsonl` (the first SHOWN_CHANGES of them) from `rows.jsonl:1`, ... locations."""
    files = sorted({w.rsplit(":", 1)[0] for w in wheres})
    shown = [w.rsplit(":", 1)[1] if len(files) == 1 else w for w in wheres[:SHOWN_CHANGES]]
    more = f" and {len(wheres) - SHOWN_CHANGES} more" if len(wheres) > SHOWN_CHANGES else ""
    return f"lines {', '.join(shown)}{more} of {files[0]}" if len(files) == 1 else ", ".join(shown) + more


def _fmt(name: str, value, signed: bool = False) -> str:
    if value is None:
        return "-"
    if name == "perplexity":
        return f"{value:+.3f}" if signed else f"{value:.3f}"
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"
