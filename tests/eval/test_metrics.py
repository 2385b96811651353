"""Each text metric against values computed by hand (the libraries do the work; these pin how we call them)."""
import math

import pytest

from mindtune.eval.metrics import Normalise, bleu, contains, exact_match, rouge, score_row, words


def test_exact_match_normalisation_options():
    assert exact_match("  New   York ", "New York") == 1.0                  # whitespace collapsed by default
    assert exact_match("New  York", "New York", Normalise(whitespace=False)) == 0.0
    assert exact_match("Paris", "paris") == 0.0                             # case kept by default
    assert exact_match("Paris", "paris", Normalise(case=True)) == 1.0
    assert exact_match("Paris.", "Paris") == 0.0
    assert exact_match("Paris.", "Paris", Normalise(punctuation=True)) == 1.0
    assert exact_match("“巴黎”。", "巴黎", Normalise(punctuation=True)) == 1.0   # Unicode punctuation too
    assert exact_match("Paris\nbecause it is the capital", "Paris") == 0.0
    assert exact_match("\nParis\nbecause it is the capital", "Paris", Normalise(first_line=True)) == 1.0
    # first_line cuts the prediction only: a two-line reference still needs two lines
    assert exact_match("a\nb", "a\nb", Normalise(first_line=True, whitespace=False)) == 0.0


def test_contains():
    assert contains("The answer is 42.", "42") == 1.0
    assert contains("The answer is 41.", "42") == 0.0
    assert contains("THE ANSWER IS OSLO", "oslo", Normalise(case=True)) == 1.0


def test_rouge_english_by_words():
    # hyp: the cat sat on the mat / ref: the cat is on the mat (6 words each). rouge_chinese, like MindFormers'
    # ADGEN metric, counts distinct n-grams: unigrams {the cat sat on mat} vs {the cat is on mat}: 4 of 5 -> 0.8;
    # bigrams {the cat, on the, the mat} of 5 each -> 3/5; LCS "the cat on the mat" = 5 of 6 words -> 5/6
    got = rouge("the cat sat on the mat", "the cat is on the mat")
    assert got["rouge1"] == pytest.approx(4 / 5, abs=1e-6)
    assert got["rouge2"] == pytest.approx(3 / 5, abs=1e-6)
    assert got["rougeL"] == pytest.approx(5 / 6, abs=1e-6)


def test_rouge_chinese_segmented_by_jieba():
    assert words("我爱北京天安门") == ["我", "爱", "北京", "天安门"]
    assert words("我爱北京") == ["我", "爱", "北京"]
    # unigrams: 3 shared, P = 3/4, R = 3/3 -> F = 2 * 0.75 / 1.75 = 6/7
    # bigrams: hyp {我爱, 爱北京, 北京天安门}, ref {我爱, 爱北京}: P = 2/3, R = 1 -> F = 0.8; LCS 3 -> 6/7
    got = rouge("我爱北京天安门", "我爱北京")
    assert got["rouge1"] == pytest.approx(6 / 7, abs=1e-6)
    assert got["rouge2"] == pytest.approx(0.8, abs=1e-6)
    assert got["rougeL"] == pytest.approx(6 / 7, abs=1e-6)


def test_rouge_of_an_empty_prediction_is_zero():
    assert rouge("", "the cat") == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}


def test_bleu_brevity_penalty():
    # every n-gram of the 5-word hypothesis is in the 8-word reference: precisions 1, BP = exp(1 - 8/5)
    assert bleu("the quick brown fox jumps", "the quick brown fox jumps over the dog") == \
        pytest.approx(math.exp(1 - 8 / 5), abs=1e-9)


def test_bleu_smoothed_precisions():
    # p1 = 5/6, p2 = 3/5, p3 = 1/4, p4 = 0/3 -> smoothed (nltk method3) to 1 / (2 * 3); equal lengths, BP = 1
    expected = (5 / 6 * 3 / 5 * 1 / 4 * 1 / 6) ** 0.25
    assert bleu("the cat sat on the mat", "the cat is on the mat") == pytest.approx(expected, abs=1e-9)
    assert bleu("", "the cat") == 0.0


def test_score_row_columns():
    got = score_row("Oslo", "Oslo", ["exact_match", "rouge", "bleu", "contains"])
    assert set(got) == {"exact_match", "contains", "rouge1", "rouge2", "rougeL", "bleu"}
    assert got["exact_match"] == got["contains"] == 1.0
    assert got["rouge1"] == got["rougeL"] == pytest.approx(1.0, abs=1e-6) and got["bleu"] > 0


def test_cli_flags_set_the_normalisation():
    from mindtune.cli import build_parser
    from mindtune.commands.eval import options_from_args

    args = build_parser().parse_args(["eval", "--model", "m", "--input", "x.jsonl", "--ignore-case",
                                      "--ignore-punctuation", "--first-line", "--keep-whitespace"])
    assert options_from_args(args).norm == Normalise(whitespace=False, case=True, punctuation=True, first_line=True)
    default = options_from_args(build_parser().parse_args(["eval", "--model", "m", "--input", "x.jsonl"]))
    assert default.norm == Normalise() and default.sampling.greedy
