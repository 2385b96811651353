"""GRPO's maths on small cases computed by hand: group advantages, the clipped objective on both sides, the k3
KL, masking after EOS, token vs sequence averaging; and the rule rewards."""
import math
import re

import mindspore as ms
import numpy as np
import pytest

from mindtune.errors import ConfigError, DataError
from mindtune.rlhf.losses import grpo_loss
from mindtune.rlhf.rewards import Rule, build_rule, group_advantages, load_function, normalize_text


def t(values):
    return ms.Tensor(np.asarray(values, np.float32))


def value(x):
    return float(x.asnumpy())


def test_group_advantages_by_hand():
    adv, std = group_advantages([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0], group_size=4)
    # group 1: mean 0.5, sample std sqrt(1/3); group 2: all equal -> 0
    s = math.sqrt(1 / 3)
    np.testing.assert_allclose(adv[:4], [0.5 / (s + 1e-4), -0.5 / (s + 1e-4), -0.5 / (s + 1e-4), 0.5 / (s + 1e-4)])
    assert np.all(adv[4:] == 0) and std[1] == 0
    adv, _ = group_advantages([3.0, 1.0, 5.0, 5.0], group_size=2, scale="none")   # Dr. GRPO: centred only
    np.testing.assert_allclose(adv, [1.0, -1.0, 0.0, 0.0])


# one response of 3 tokens (the 4th position is padding after EOS)
MASK = [[1.0, 1.0, 1.0, 0.0]]
OLD = [[-1.0, -1.0, -1.0, -1.0]]


def test_clipped_objective_on_both_sides():
    up = [[-1.0 + math.log(1.5), -1.0, -1.0, 0.0]]    # ratios 1.5, 1, 1
    # positive advantage: the ratio 1.5 is clipped to 1.2 -> per-token -2 * (1.2, 1, 1); mean over 3 tokens
    loss, _, clip = grpo_loss(t(up), t(OLD), t(up), t([2.0]), t(MASK), 0.2)
    assert value(loss) == pytest.approx(-2 * (1.2 + 1 + 1) / 3, rel=1e-5)
    assert value(clip) == pytest.approx(1 / 3)
    # negative advantage: the ratio 1.5 is not clipped (pessimistic side) -> -(-2) * 1.5
    loss, _, clip = grpo_loss(t(up), t(OLD), t(up), t([-2.0]), t(MASK), 0.2)
    assert value(loss) == pytest.approx(2 * (1.5 + 1 + 1) / 3, rel=1e-5) and value(clip) == 0
    down = [[-1.0 + math.log(0.5), -1.0, -1.0, 0.0]]  # ratio 0.5
    loss, _, clip = grpo_loss(t(down), t(OLD), t(down), t([-2.0]), t(MASK), 0.2)   # clipped to 0.8
    assert value(loss) == pytest.approx(2 * (0.8 + 1 + 1) / 3, rel=1e-5) and value(clip) == pytest.approx(1 / 3)
    loss, _, _ = grpo_loss(t(down), t(OLD), t(down), t([2.0]), t(MASK), 0.2)       # not clipped
    assert value(loss) == pytest.approx(-2 * (0.5 + 1 + 1) / 3, rel=1e-5)
    # DAPO's higher upper clip: 1.5 within 1 + 0.6
    loss, _, _ = grpo_loss(t(up), t(OLD), t(up), t([2.0]), t(MASK), 0.2, epsilon_high=0.6)
    assert value(loss) == pytest.approx(-2 * (1.5 + 1 + 1) / 3, rel=1e-5)


def test_k3_kl_term_by_hand():
    logp, ref = [[-1.0, -2.0, -1.0, 0.0]], [[-1.5, -2.0, -0.5, 0.0]]
    # x = ref - logp = -0.5, 0, 0.5: k3 = e^x - 1 - x
    k3 = [math.exp(x) - 1 - x for x in (-0.5, 0.0, 0.5)]
    loss, kl, _ = grpo_loss(t(logp), t(logp), t(ref), t([0.0]), t(MASK), 0.2, beta=0.1)
    assert value(kl) == pytest.approx(sum(k3) / 3, rel=1e-5)
    assert value(loss) == pytest.approx(0.1 * sum(k3) / 3, rel=1e-5)
    assert all(k >= 0 for k in k3)


def test_positions_after_eos_change_nothing():
    a = [[-1.0, -1.2, -0.7, -0.1]]
    b = [[-1.0, -1.2, -0.7, -9.0]]     # only the masked position differs
    for loss_type in ("token", "sequence"):
        la = grpo_loss(t(a), t(OLD), t(OLD), t([1.5]), t(MASK), 0.2, beta=0.1, loss_type=loss_type)
        lb = grpo_loss(t(b), t(OLD), t([[-1.0, -1.0, -1.0, 3.0]]), t([1.5]), t(MASK), 0.2, beta=0.1,
                       loss_type=loss_type)
        for x, y in zip(la, lb):
            assert value(x) == pytest.approx(value(y), rel=1e-6)


def test_token_and_sequence_averaging():
    # two responses at ratio 1: per-token loss = -advantage; lengths 1 and 3
    mask = [[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]]
    zeros = [[0.0] * 3] * 2
    token, _, _ = grpo_loss(t(zeros), t(zeros), t(zeros), t([1.0, -1.0]), t(mask), 0.2, loss_type="token")
    assert value(token) == pytest.approx((-1 + 3) / 4)
    seq, _, _ = grpo_loss(t(zeros), t(zeros), t(zeros), t([1.0, -1.0]), t(mask), 0.2, loss_type="sequence")
    assert value(seq) == pytest.approx((-1 + 1) / 2)


class Cfg:
    answer_field, normalize, pattern, target_length = "answer", ["whitespace", "case"], r"\d+", 10


def test_builtin_rules():
    em = build_rule("exact_match", Cfg, "grpo.reward[0]")
    row = {"answer": "Paris  is\nbig"}
    assert em("q", " paris is BIG ", row, "f:1") == 1.0 and em("q", "Paris", row, "f:1") == 0.0
    assert normalize_text("Hi, there!\nsecond", ["first_line", "punctuation", "case"]) == "hi there"
    assert build_rule("regex", Cfg, "k")("q", "it is 42", {}, "f:1") == 1.0
    assert build_rule("regex", Cfg, "k")("q", "none", {}, "f:1") == 0.0
    assert build_rule("length", Cfg, "k")("q", "x" * 15, {}, "f:1") == pytest.approx(-0.5)


def test_rule_errors_name_the_row_and_the_function():
    with pytest.raises(DataError, match=r"^data.jsonl:3: reward grpo_rules:boom raised ValueError: no answer here$"):
        Rule("grpo_rules:boom", load_function("grpo_rules:boom", "k"))("q", "r", {}, "data.jsonl:3")
    with pytest.raises(DataError, match=r"data.jsonl:2: reward grpo_rules:not_a_number returned 'high' \(str\), "
                                        "not a number"):
        Rule("grpo_rules:not_a_number", load_function("grpo_rules:not_a_number", "k"))("q", "r", {}, "data.jsonl:2")
    with pytest.raises(DataError, match="data.jsonl:5: reward exact_match raised KeyError: .*no field 'answer'"):
        build_rule("exact_match", Cfg, "k")("q", "r", {"solution": "x"}, "data.jsonl:5")


@pytest.mark.parametrize("spec, message", [
    ("grpo_rules:missing", "grpo.reward[1]: 'grpo_rules' has no function 'missing'"),
    ("no_such_module_xyz:fn", "grpo.reward[1]: cannot import 'no_such_module_xyz'"),
    ("exact-match", "grpo.reward[1]: 'exact-match' is not a built-in"),
])
def test_unknown_functions_are_refused(spec, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_rule(spec, Cfg, "grpo.reward[1]")
