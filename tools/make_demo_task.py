"""Regenerate the data of `mindtune demo`: write four letters (joined by dashes) in capitals.

    python tools/make_demo_task.py

A tiny model trained from scratch learns the rule within the demo's two minutes (each output letter is the
input letter four positions back, mapped to its capital). The held-out rows are letter sequences never seen in
training, so a high exact match means the rule was learnt, not the rows. Writes mindtune/assets/
demo_upper_train.jsonl and demo_upper_eval.jsonl; seeded, so reruns give the same files.

It also writes the data of `mindtune demo --real`: reversing four letters (demo_reverse_*.jsonl), which
SmolLM2-135M-Instruct fails (0 of 32 held-out rows exact) and learns under LoRA.
"""
import json
import os
import random
import string

ASSETS = os.path.join(os.path.dirname(__file__), "..", "mindtune", "assets")
INSTRUCTION = "Write the letters in capitals."
REVERSE = "Reverse the order of the letters."
LETTERS = 4


def rows(rng, count, seen, reverse=False):
    out = []
    while len(out) < count:
        letters = rng.sample(string.ascii_lowercase, LETTERS)
        key = "-".join(letters)
        if key in seen:
            continue
        seen.add(key)
        if reverse:
            out.append({"instruction": REVERSE, "input": key, "output": "-".join(reversed(letters))})
        else:
            out.append({"instruction": INSTRUCTION, "input": key, "output": key.upper()})
    return out


def main():
    rng, seen = random.Random(0), set()
    for name, count in (("demo_upper_eval.jsonl", 64), ("demo_upper_train.jsonl", 2000)):
        with open(os.path.join(ASSETS, name), "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows(rng, count, seen))
    rng, seen = random.Random(1), set()
    for name, count in (("demo_reverse_eval.jsonl", 32), ("demo_reverse_train.jsonl", 1000)):
        with open(os.path.join(ASSETS, name), "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows(rng, count, seen, reverse=True))


if __name__ == "__main__":
    main()
