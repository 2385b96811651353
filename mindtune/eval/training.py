"""Task metrics during training (`train.eval_metrics`): at each evaluation the engine calls a
`TrainingEvaluator`, which generates greedily on data.eval's prompts with the current weights and returns
{"eval_exact_match": ..., "eval_rougeL": ...} for the metrics row."""
from typing import Optional

from mindtune.errors import ConfigError
from mindtune.eval.metrics import check_metrics
from mindtune.eval.model import EvalModel
from mindtune.eval.rows import read_eval_rows
from mindtune.eval.runner import EvalOptions, evaluate, summarise

# methods whose current weights fold into a plain Llama for the generator
SUPPORTED = ("none", "lora")
SHOWN_EXAMPLES = 3


def check_training_eval(config) -> Optional[list]:
    """The evaluation rows if train.eval_metrics is set (checked before anything is written), else None."""
    metrics = config.train.eval_metrics
    if not metrics:
        return None
    check_metrics(metrics, key="train.eval_metrics")
    if config.peft.method not in SUPPORTED:
        raise ConfigError(f"train.eval_metrics: generation during training supports peft.method none and lora, "
                          f"not {config.peft.method!r}; evaluate the saved adapter with `mindtune eval`")
    if not config.data.eval:
        raise ConfigError("train.eval_metrics: needs data.eval (the rows to generate on)")
    rows = read_eval_rows(config.data.eval, key="data.eval", limit=config.data.eval_rows, columns=config.data.columns)
    if any(r.is_choice for r in rows):
        raise ConfigError("train.eval_metrics: data.eval has multiple-choice rows; use SFT rows with references")
    return rows


class TrainingEvaluator:
    """Callable for `TrainTask.eval_extra`. `current_weights()` gives the training network's weights now (read
    with asnumpy; the training parameters are never written). The generator is compiled once; later calls
    only swap its weights. Keeps the first and latest predictions for `examples()`."""

    def __init__(self, rows, metrics, spec, tokenizer, profile, current_weights, batch_size: int,
                 max_new_tokens: int):
        self.rows, self.current_weights = rows, current_weights
        self.opts = EvalOptions(metrics=tuple(metrics), max_new_tokens=max_new_tokens)
        self.model = EvalModel("the training network", spec, None, tokenizer, profile, batch_size)
        self.first: Optional[dict] = None
        self.latest: Optional[dict] = None

    def __call__(self) -> dict:
        weights = self.current_weights()
        if self.model.weights is None:
            self.model.weights = weights
        else:
            self.model.update_weights(weights)
        results = evaluate(self.model, self.rows, self.opts)
        scores = {f"eval_{k}": v for k, v in summarise(self.rows, results).items()}
        self.latest = {"scores": scores, "predictions": [r["prediction"] for r in results]}
        if self.first is None:
            self.first = self.latest
        return scores

    def report(self, shown: int = SHOWN_EXAMPLES) -> str:
        """Lines for the end of a run: each metric first -> last, and a few rows' predictions before and after."""
        if self.first is None or self.latest is None:
            return ""
        lines = ["task metrics on data.eval (start -> end): " + ", ".join(
            f"{k[5:]} {self.first['scores'].get(k, float('nan')):.3f} -> {v:.3f}"
            for k, v in self.latest["scores"].items())]
        for i, row in enumerate(self.rows[:shown]):
            prompt = " / ".join(line for line in row.messages[-1]["content"].splitlines() if line.strip())
            before, after = (_shown(run["predictions"][i]) for run in (self.first, self.latest))
            lines.append(f"  {row.where}: {prompt!r} reference {row.reference!r}: before {before} -> after {after}")
        return "\n".join(lines)


def build_evaluator(rows, config, resolved, adapted, profile) -> TrainingEvaluator:
    from mindtune.models.build import get_weights

    if adapted.merged_weights is not None:
        current = adapted.merged_weights
    elif adapted.adapter_names is None:
        def current():
            return get_weights(adapted.network)
    else:
        raise ConfigError(f"train.eval_metrics: peft.method {config.peft.method!r} has no merged weights")
    return TrainingEvaluator(rows, config.train.eval_metrics, resolved.spec, resolved.tokenizer, profile, current,
                             batch_size=min(max(config.train.batch_size, 8), len(rows)),
                             max_new_tokens=config.train.eval_max_new_tokens)


def _shown(prediction: str) -> str:
    return repr(prediction) if prediction else "(nothing)"
