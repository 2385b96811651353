"""Generate the shipped PPO pipeline data for the tiny model (seeded; `python tests/ppo/make_ppo_data.py` rewrites
them, and tests/ppo/test_ppo_data.py checks the shipped files match).

ppo_keyword_sft.jsonl      SFT rows: a prompt and a few words, half of the answers containing "capital" (the word
                           the rm_keyword_* reward model prefers), so the SFT policy says it about half the time.
ppo_keyword_prompts*.jsonl PPO prompt rows (train / held out) of the same shape.
ppo_bluebird_prompts*.jsonl (SmolLM2) the prompts of the rm_bluebird_* preference sets (train / held out), for PPO
                           against the bluebird reward model.
"""
import json
import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from tests.rm.make_rm_data import ASSETS, DECOYS, TOPICS, WORDS, write  # noqa: E402


def sft_rows(n: int, rng: random.Random) -> list:
    rows = []
    for _ in range(n):
        words = rng.sample(WORDS, rng.randint(2, 4))
        words.insert(rng.randint(0, len(words)), "capital" if rng.random() < 0.5 else rng.choice(DECOYS))
        rows.append({"instruction": f"Write a few words about {rng.choice(TOPICS)}.", "output": " ".join(words)})
    return rows


def prompt_rows(n: int, rng: random.Random) -> list:
    return [{"prompt": f"Write a few words about {rng.choice(TOPICS)}."} for _ in range(n)]


def bluebird_prompts(split: str, n: int) -> list:
    seen = []
    with open(os.path.join(ASSETS, f"rm_bluebird_{split}.jsonl"), encoding="utf-8") as f:
        for line in f:
            prompt = json.loads(line)["prompt"]
            if prompt not in seen:
                seen.append(prompt)
    return [{"prompt": p} for p in seen[:n]]


def all_sets() -> dict:
    rng = random.Random(11)
    return {"ppo_bluebird_prompts.jsonl": bluebird_prompts("train", 64),
            "ppo_bluebird_prompts_eval.jsonl": bluebird_prompts("eval", 16),
            "ppo_keyword_sft.jsonl": sft_rows(400, rng), "ppo_keyword_prompts.jsonl": prompt_rows(64, rng),
            "ppo_keyword_prompts_eval.jsonl": prompt_rows(16, rng)}


if __name__ == "__main__":
    for file_name, file_rows in all_sets().items():
        write(file_name, file_rows)
