"""mindtune eval through the real CLI on tiny models: multiple-choice log-likelihoods and perplexity against the
numpy reference Llama, --baseline's changed rows, output files, and bad rows (file:line, exit 2)."""
import json

import numpy as np
import pytest
from reference.numpy_llama import llama_logits

from mindtune.data.tokenizer import load_tokenizer
from mindtune.eval.model import prompt_text
from mindtune.eval.runner import split_pair
from mindtune.models.loading import TINY_TOKENIZER

QUESTIONS = ["What colour is grass?", "What is 2 plus 3?", "Which is a fruit?", "Where is Oslo?",
             "Pick a letter.", "What do cows drink?", "Name a planet.", "How many legs has a cat?"]
CHOICES = [["green", "blue", "red", "black"], ["5", "6", "four", "23"], ["apple", "stone", "river", "chair"],
           ["Norway", "Peru", "Japan", "Egypt"], ["a", "b", "c", "d"], ["water", "milk", "oil", "tea"],
           ["Mars", "Moon", "Sun", "Paris"], ["four", "three", "two", "six"]]
GENERATION = [{"instruction": "Reverse the word.", "input": "forest", "output": "tserof"},
              {"prompt": "What is the capital of Norway?", "answer": "Oslo"}]


def reference_logprob(weights, spec, context, continuation):
    """sum of log p(continuation | context) by the numpy Llama (float64)."""
    ids = list(context) + list(continuation)
    logits = llama_logits(weights, spec, ids)
    logp = logits - logits.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    return sum(logp[len(context) - 1 + t, tok] for t, tok in enumerate(continuation))


def pairs_for(tok, question, choices):
    context = prompt_text([{"role": "user", "content": question}], tok)
    return [split_pair(tok, context, c) for c in choices]


@pytest.fixture(scope="module")
def scored_run(tiny_models, tmp_path_factory, cli):
    """One CLI run of model m0 with baseline m1 on multiple-choice and generation rows. The answers are chosen
    from the numpy reference's picks (m0's pick on even rows, m1's on odd rows) so that rows change both ways."""
    tok = load_tokenizer(TINY_TOKENIZER)
    _, spec, w0 = tiny_models[0]
    _, _, w1 = tiny_models[1]
    expected = []
    for question, choices in zip(QUESTIONS, CHOICES):
        pairs = pairs_for(tok, question, choices)
        expected.append([[reference_logprob(w, spec, c, x) for c, x in pairs] for w in (w0, w1)])
    rows = []
    for i, (question, choices) in enumerate(zip(QUESTIONS, CHOICES)):
        picks = [int(np.argmax(lp)) for lp in expected[i]]
        rows.append({"question": question, "choices": choices, "answer": picks[i % 2]})
    rows += GENERATION
    tmp = tmp_path_factory.mktemp("eval")
    data = tmp / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp / "out"
    code, stdout, stderr = cli("eval", "--model", tiny_models[0][0], "--baseline", tiny_models[1][0],
                               "--input", data, "--output", out, "--metrics", "exact_match", "rouge", "perplexity",
                               "--max-new-tokens", "6")
    assert code == 0, stderr
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    return dict(rows=rows, expected=expected, predictions=predictions, summary=summary, stdout=stdout,
                data=str(data), tok=tok, spec=spec, weights=(w0, w1))


def test_choice_log_likelihoods_match_the_numpy_reference(scored_run):
    for i, expected in enumerate(scored_run["expected"]):
        got = scored_run["predictions"][i]
        np.testing.assert_allclose(got["choice_logprobs"], expected[0], rtol=1e-4, atol=1e-3)
        assert got["prediction_index"] == int(np.argmax(expected[0]))
        assert got["scores"]["accuracy"] == float(int(np.argmax(expected[0])) == scored_run["rows"][i]["answer"])
    accuracy = np.mean([p["scores"]["accuracy"] for p in scored_run["predictions"][:len(QUESTIONS)]])
    assert scored_run["summary"]["metrics"]["accuracy"] == pytest.approx(accuracy)


def test_perplexity_of_references_matches_the_numpy_reference(scored_run):
    tok, spec, w0 = scored_run["tok"], scored_run["spec"], scored_run["weights"][0]
    nll, count = 0.0, 0
    for row, got in zip(scored_run["rows"][len(QUESTIONS):], scored_run["predictions"][len(QUESTIONS):]):
        prompt = row.get("prompt") or f"{row['instruction']}\n\n{row['input']}"
        reference = row.get("answer") or row["output"]
        context, continuation = split_pair(tok, prompt_text([{"role": "user", "content": prompt}], tok), reference)
        row_nll = -reference_logprob(w0, spec, context, continuation)
        assert got["nll"] == pytest.approx(row_nll, rel=1e-4) and got["tokens"] == len(continuation)
        nll, count = nll + row_nll, count + len(continuation)
    assert scored_run["summary"]["metrics"]["perplexity"] == pytest.approx(np.exp(nll / count), rel=1e-4)


def test_baseline_side_by_side_and_changed_rows(scored_run):
    summary, data = scored_run["summary"], scored_run["data"]
    wrong_to_right, right_to_wrong = [], []
    for i, (now, before) in enumerate(scored_run["expected"]):
        a, b = int(np.argmax(now)), int(np.argmax(before))
        if a != b:   # even rows' answer is m0's pick, odd rows' is m1's
            (wrong_to_right if i % 2 == 0 else right_to_wrong).append(f"{data}:{i + 1}")
    assert wrong_to_right and right_to_wrong   # the fixture's answers make rows change both ways
    assert summary["wrong_to_right"] == wrong_to_right and summary["right_to_wrong"] == right_to_wrong
    base_accuracy = np.mean([p["baseline_scores"]["accuracy"] for p in scored_run["predictions"][:len(QUESTIONS)]])
    assert summary["baseline"]["metrics"]["accuracy"] == pytest.approx(base_accuracy)
    assert summary["difference"]["accuracy"] == pytest.approx(summary["metrics"]["accuracy"] - base_accuracy)
    numbers = ", ".join(w.rsplit(":", 1)[1] for w in wrong_to_right)
    assert f"wrong -> right: {len(wrong_to_right)} rows (lines {numbers} of {data})" in scored_run["stdout"]
    assert "baseline" in scored_run["stdout"] and "accuracy" in scored_run["stdout"]


def test_generation_rows_have_predictions_and_scores(scored_run):
    for got in scored_run["predictions"][len(QUESTIONS):]:
        assert isinstance(got["prediction"], str)
        assert {"exact_match", "rouge1", "rouge2", "rougeL", "perplexity"} <= set(got["scores"])
        assert isinstance(got["baseline_prediction"], str)
    assert {"exact_match", "rougeL", "accuracy", "perplexity"} <= set(scored_run["summary"]["metrics"])


@pytest.mark.parametrize("row, message", [
    ({"instruction": "Say hi.", "input": ""}, "rows.jsonl:2: no reference answer: missing field 'output'"),
    ({"question": "Which?", "choices": [], "answer": 0}, "rows.jsonl:2: 'choices' must be a non-empty list"),
    ({"question": "Which?", "choices": ["a", "b"], "answer": 2}, "rows.jsonl:2: answer index 2 is out of range"),
    ({"question": "Which?", "choices": ["a", "b"], "answer": "c"}, "rows.jsonl:2: answer 'c' is not one of"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "rows.jsonl:2: 'messages' has no assistant turn"),
])
def test_bad_rows_name_file_and_line(cli, tmp_path, tiny_models, row, message):
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps(GENERATION[1]) + "\n" + json.dumps(row) + "\n")
    code, stdout, stderr = cli("eval", "--model", tiny_models[0][0], "--input", data, cwd=tmp_path)
    assert code == 2, stderr
    assert message in stderr and "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1


def test_unknown_metric_is_refused(cli, tmp_path, tiny_models):
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps(GENERATION[1]) + "\n")
    code, _, stderr = cli("eval", "--model", tiny_models[0][0], "--input", data, "--metrics", "f1")
    assert code == 2 and "--metrics: unknown metric 'f1'" in stderr
