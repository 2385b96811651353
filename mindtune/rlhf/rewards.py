"""GRPO's rewards: rules on the response text (built-ins and `module:function`), and group-relative advantages.

A rule is called as fn(prompt, response, row) -> number: prompt the row's prompt text (its last user turn for
messages rows), response the decoded sample (EOS and special tokens removed), row the whole data row (so a rule
can read e.g. row["answer"]). Built-ins, configured by the grpo section:

    exact_match  1.0 when the response equals row[grpo.answer_field] after grpo.normalize
                 (whitespace: collapse and strip; case: lower; punctuation: drop; first_line: keep the first line)
    regex        1.0 when re.search(grpo.pattern, response) matches
    length       -|len(response) - grpo.target_length| / grpo.target_length   (characters)

Anything else in grpo.reward is `package.module:function` (imported from the working directory too), or a
reward-model run directory (handled by the stage: it scores token sequences, not text).
"""
import importlib
import math
import os
import re
import string
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np

from mindtune.errors import ConfigError, DataError

BUILTINS = ("exact_match", "regex", "length")
NORMALIZATIONS = ("whitespace", "case", "punctuation", "first_line")


def normalize_text(text: str, steps) -> str:
    if "first_line" in steps:
        text = text.strip().split("\n", 1)[0]
    if "case" in steps:
        text = text.lower()
    if "punctuation" in steps:
        text = text.translate(str.maketrans("", "", string.punctuation))
    if "whitespace" in steps:
        text = " ".join(text.split())
    return text


@dataclass
class Rule:
    """A named text reward: fn(prompt, response, row) -> float."""
    name: str
    fn: Callable

    def __call__(self, prompt: str, response: str, row: dict, where: str) -> float:
        """The reward as a float; a rule that raises or returns a non-number stops with the row and the rule."""
        try:
            value = self.fn(prompt, response, row)
        except Exception as exc:  # noqa: BLE001 - any user error becomes one line naming row and rule
            raise DataError(f"{where}: reward {self.name} raised {type(exc).__name__}: {exc}") from None
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise DataError(f"{where}: reward {self.name} returned {value!r} ({type(value).__name__}), "
                            "not a number")
        if not math.isfinite(float(value)):
            raise DataError(f"{where}: reward {self.name} returned {value!r}, not a finite number")
        return float(value)


def exact_match(answer_field: str, normalize) -> Callable:
    bad = [n for n in normalize if n not in NORMALIZATIONS]
    if bad:
        raise ConfigError(f"grpo.normalize: unknown {bad[0]!r}; available: {', '.join(NORMALIZATIONS)}")

    def reward(prompt, response, row):
        if answer_field not in row:
            raise KeyError(f"the row has no field {answer_field!r} (grpo.answer_field)")
        return float(normalize_text(response, normalize) == normalize_text(str(row[answer_field]), normalize))
    return reward


def regex(pattern: str) -> Callable:
    if not pattern:
        raise ConfigError("grpo.pattern: required by the regex reward")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"grpo.pattern: {pattern!r} is not a regular expression: {exc}") from None
    return lambda prompt, response, row: float(compiled.search(response) is not None)


def length(target: int) -> Callable:
    return lambda prompt, response, row: -abs(len(response) - target) / target


def load_function(spec: str, key: str) -> Callable:
    """`package.module:function`, imported now (the working directory is importable); ConfigError otherwise."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{key}: {spec!r} is not a built-in ({', '.join(BUILTINS)}), a reward-model directory "
                          "or module:function")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - ImportError or an error inside the user's module
        raise ConfigError(f"{key}: cannot import {module_name!r} for {spec!r}: {type(exc).__name__}: {exc}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"{key}: {module_name!r} has no function {attr!r}")
    return fn


def is_reward_model(spec: str) -> bool:
    return os.path.isdir(spec)


def build_rule(spec: str, cfg, key: str) -> Rule:
    """The Rule for one grpo.reward entry that is not a reward-model directory."""
    if spec == "exact_match":
        return Rule(spec, exact_match(cfg.answer_field, cfg.normalize))
    if spec == "regex":
        return Rule(spec, regex(cfg.pattern))
    if spec == "length":
        return Rule(spec, length(cfg.target_length))
    return Rule(spec, load_function(spec, key))


def reward_weights(cfg) -> list:
    if not cfg.reward:
        raise ConfigError("grpo.reward: at least one reward is required")
    weights = list(cfg.reward_weights) or [1.0] * len(cfg.reward)
    if len(weights) != len(cfg.reward):
        raise ConfigError(f"grpo.reward_weights: {len(weights)} weight(s) for {len(cfg.reward)} reward(s)")
    return weights


def group_advantages(rewards: np.ndarray, group_size: int, scale: str = "group", eps: float = 1e-4):
    """Advantages of N = G x group_size rewards laid out group by group: r - mean(group), divided by the group's
    std (+ eps) when scale is "group" (GRPO), not divided when "none" (Dr. GRPO). A group whose rewards are all
    equal gets 0. Returns (advantages [N], per-group std [G])."""
    r = np.asarray(rewards, np.float64).reshape(-1, group_size)
    centred = r - r.mean(axis=1, keepdims=True)
    std = r.std(axis=1, ddof=1) if group_size > 1 else np.zeros(len(r))
    if scale == "group":
        centred = centred / (std[:, None] + eps)
    return centred.reshape(-1), std
