"""The runner's scoring rules on a stand-in model (no network): length normalisation of choices, the
token-weighted perplexity, and which rows count as changed against a baseline."""
import math

from mindtune.data.tokenizer import load_tokenizer
from mindtune.eval.rows import parse_row
from mindtune.eval.runner import EvalOptions, changed_rows, evaluate, summarise
from mindtune.models.loading import TINY_TOKENIZER


class FakeModel:
    """loglik returns a fixed (sum of log-probabilities, tokens) per continuation text."""

    def __init__(self, table):
        self.tokenizer = load_tokenizer(TINY_TOKENIZER)
        self.table = table

    def loglik(self, pairs):
        return [self.table[self.tokenizer.decode(cont)] for _, cont in pairs]

    def generate(self, prompts, max_new_tokens, sampling, seed=0):
        return ["Oslo"] * len(prompts)


ROW = {"question": "Which?", "choices": ["apple", "kiwi"], "answer": 0}


def test_length_normalised_choice_ranks_by_mean_log_probability():
    model = FakeModel({"apple": (-4.0, 4), "kiwi": (-3.0, 1)})   # sums: kiwi wins; means -1 vs -3: apple wins
    rows = [parse_row("f:1", ROW)]
    plain = evaluate(model, rows, EvalOptions())[0]
    normed = evaluate(model, rows, EvalOptions(length_normalised=True))[0]
    assert plain["prediction"] == "kiwi" and plain["scores"]["accuracy"] == 0.0
    assert normed["prediction"] == "apple" and normed["scores"]["accuracy"] == 1.0
    assert plain["choice_logprobs"] == [-4.0, -3.0]


def test_perplexity_is_token_weighted_over_all_references():
    model = FakeModel({"Oslo": (-2.0, 1), "Paris is big": (-6.0, 3)})
    rows = [parse_row("f:1", {"prompt": "Capital of Norway?", "answer": "Oslo"}),
            parse_row("f:2", {"prompt": "Capital of France?", "answer": "Paris is big"})]
    results = evaluate(model, rows, EvalOptions(metrics=("exact_match", "perplexity")))
    assert [r["scores"]["exact_match"] for r in results] == [1.0, 0.0]
    assert results[0]["scores"]["perplexity"] == math.exp(2.0) and results[1]["scores"]["perplexity"] == math.exp(2.0)
    summary = summarise(rows, results)
    assert summary["perplexity"] == math.exp(8.0 / 4) and summary["exact_match"] == 0.5


def test_changed_rows_use_accuracy_then_exact_match():
    rows = [parse_row(f"f:{i}", {"prompt": "q", "answer": "a"}) for i in (1, 2, 3, 4)]
    now = [{"scores": {"exact_match": 1.0}}, {"scores": {"exact_match": 0.0}}, {"scores": {"exact_match": 1.0}},
           {"scores": {"rougeL": 0.5}}]
    before = [{"scores": {"exact_match": 0.0}}, {"scores": {"exact_match": 1.0}}, {"scores": {"exact_match": 1.0}},
              {"scores": {"rougeL": 0.1}}]
    assert changed_rows(rows, now, before) == {"wrong_to_right": ["f:1"], "right_to_wrong": ["f:2"]}
