"""Reward functions for the GRPO tests (imported as tests.grpo.grpo_rules:NAME or grpo_rules:NAME)."""


def contains_e(prompt, response, row):
    return float("e" in response)


def boom(prompt, response, row):
    raise ValueError("no answer here")


def not_a_number(prompt, response, row):
    return "high"


def answer_length(prompt, response, row):
    return float(len(row["answer"]))
