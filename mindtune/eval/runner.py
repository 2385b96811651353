"""Evaluate one model on evaluation rows: generate and score generation rows, score multiple-choice rows by
log-likelihood, optionally the perplexity of the references. Returns per-row results and a summary."""
import math
from dataclasses import dataclass, field
from typing import List

from mindtune.eval.metrics import GENERATION_METRICS, METRIC_COLUMNS, Normalise, score_row
from mindtune.eval.model import prompt_text

ALL_METRICS = GENERATION_METRICS + ("perplexity",)
# what decides whether a row counts as right (for --baseline's changed rows), in order of preference
PRIMARY = ("accuracy", "exact_match", "contains")


@dataclass
class EvalOptions:
    metrics: tuple = GENERATION_METRICS      # generation metrics and/or "perplexity"
    norm: Normalise = field(default_factory=Normalise)
    max_new_tokens: int = 64
    sampling: object = None                  # a SamplingConfig; None = greedy
    seed: int = 0
    raw: bool = False                        # prompts without the chat template
    length_normalised: bool = False          # multiple choice: mean log-probability per token


def evaluate(model, rows, opts: EvalOptions) -> List[dict]:
    """One result per row: {"prediction", "scores"} (+ "choice_logprobs" for multiple choice,
    "nll"/"tokens" when perplexity is asked for)."""
    from mindtune.generation import SamplingConfig

    tok = model.tokenizer
    prompts = [prompt_text(r.messages, tok, opts.raw) for r in rows]
    results = [{} for _ in rows]
    gen = [i for i, r in enumerate(rows) if not r.is_choice]
    text_metrics = [m for m in opts.metrics if m in GENERATION_METRICS]
    if gen and text_metrics:
        texts = model.generate([tok.encode(prompts[i]) for i in gen], opts.max_new_tokens,
                               opts.sampling or SamplingConfig(greedy=True), opts.seed)
        for i, text in zip(gen, texts):
            results[i] = {"prediction": text, "scores": score_row(text, rows[i].reference, text_metrics, opts.norm)}
    if gen and "perplexity" in opts.metrics:
        scored = model.loglik([split_pair(tok, prompts[i], rows[i].reference) for i in gen])
        for i, (logp, count) in zip(gen, scored):
            results[i].setdefault("scores", {})["perplexity"] = math.exp(-logp / max(count, 1))
            results[i].update(nll=-logp, tokens=count)
    choice = [i for i, r in enumerate(rows) if r.is_choice]
    if choice:
        pairs = [split_pair(tok, prompts[i], c) for i in choice for c in rows[i].choices]
        scored = iter(model.loglik(pairs))
        for i in choice:
            logps = [next(scored) for _ in rows[i].choices]
            values = [lp / max(n, 1) if opts.length_normalised else lp for lp, n in logps]
            best = max(range(len(values)), key=values.__getitem__)
            results[i] = {"prediction": rows[i].choices[best], "prediction_index": best,
                          "choice_logprobs": [lp for lp, _ in logps],
                          "scores": {"accuracy": float(best == rows[i].answer)}}
    return results


def split_pair(tokenizer, context: str, continuation: str):
    """(context ids, continuation ids): the tokens of context + continuation split where the context's own
    tokens end (as lm-evaluation-harness does); if a merge crosses the boundary, the two are encoded apart."""
    ctx = tokenizer.encode(context)
    full = tokenizer.encode(context + continuation)
    if full[:len(ctx)] == ctx and len(full) > len(ctx):
        return ctx, full[len(ctx):]
    cont = tokenizer.encode(continuation)
    if tokenizer.add_bos and cont and cont[0] == tokenizer.bos_id:
        cont = cont[1:]
    return ctx, cont


def summarise(rows, results) -> dict:
    """{column: mean over the rows that have it}; perplexity over all reference tokens together."""
    columns = [c for name in METRIC_COLUMNS for c in METRIC_COLUMNS[name]] + ["accuracy"]
    out = {}
    for column in columns:
        values = [r["scores"][column] for r in results if column in r.get("scores", {})]
        if values:
            out[column] = sum(values) / len(values)
    with_nll = [r for r in results if "nll" in r]
    if with_nll:
        out["perplexity"] = math.exp(sum(r["nll"] for r in with_nll) / max(1, sum(r["tokens"] for r in with_nll)))
    return out


def correct(result: dict):
    """Whether a row counts as right (accuracy, else exact match, else contains), or None if no such score."""
    scores = result.get("scores", {})
    for name in PRIMARY:
        if name in scores:
            return scores[name] >= 1.0
    return None


def changed_rows(rows, results, baseline_results) -> dict:
    """Rows right under the model and wrong under the baseline ("wrong_to_right"), and the reverse."""
    out = {"wrong_to_right": [], "right_to_wrong": []}
    for row, now, before in zip(rows, results, baseline_results):
        a, b = correct(now), correct(before)
        if a is None or b is None or a == b:
            continue
        out["wrong_to_right" if a else "right_to_wrong"].append(row.where)
    return out
