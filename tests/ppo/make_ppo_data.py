"""Generate the shipped PPO pipeline data for the tiny model (seeded; `python tests/ppo/make_ppo_data.py` rewrites
them, and tests/ppo/test_pipeline_files.py checks the shipped files match).

ppo_keyword_sft.jsonl      SFT rows: a prompt and a few words, half of the answers containing "capital" (the word
                           the rm_keyword_* reward model prefers), so the SFT policy says it about half the time.
ppo_keyword_prompts*.jsonl PPO prompt rows (train / held out) of the same shape.
ppo_bluebird_prompts*.jsonl (SmolLM2) prompts for PPO against the bluebird reward model: "name a bird that is blue
                           or <colour>" in five phrasings. SmolLM2-135M-Instruct names a blue bird in about
                           half its samples, so the behaviour the reward model prefers is sampled and can be
                           reinforced (the rm_bluebird_* prompts, about fruit and capitals, almost never drew a
                           bird). The held-out prompts are other combinations of the same questions and colours.
"""
import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from tests.rm.make_rm_data import DECOYS, TOPICS, WORDS, write  # noqa: E402


def sft_rows(n: int, rng: random.Random) -> list:
    rows = []
    for _ in range(n):
        words = rng.sample(WORDS, rng.randint(2, 4))
        words.insert(rng.randint(0, len(words)), "capital" if rng.random() < 0.5 else rng.choice(DECOYS))
        rows.append({"instruction": f"Write a few words about {rng.choice(TOPICS)}.", "output": " ".join(words)})
    return rows


def prompt_rows(n: int, rng: random.Random) -> list:
    return [{"prompt": f"Write a few words about {rng.choice(TOPICS)}."} for _ in range(n)]


BIRD_QUESTIONS = ["Name a bird that is {} or {}.", "Name a bird that is {} or {} and say one thing about it.",
                  "Which bird has {} or {} feathers?", "Tell me about a bird that is {} or {}.",
                  "What is a {} or {} bird called?"]
OTHER_COLOURS = ["red", "yellow", "black", "green", "white", "brown", "orange", "gray", "pink", "purple"]


def bluebird_prompts(rng: random.Random) -> tuple:
    """Every question, with blue first and with blue second, for each other colour: 100 prompts, shuffled, split
    64 for training and 36 held out (same questions and colours, other combinations)."""
    prompts = [q.format(*pair) for q in BIRD_QUESTIONS for c in OTHER_COLOURS for pair in (("blue", c), (c, "blue"))]
    rng.shuffle(prompts)
    rows = [{"prompt": p} for p in prompts]
    return rows[:64], rows[64:]


def all_sets() -> dict:
    rng = random.Random(11)
    bluebird_train, bluebird_eval = bluebird_prompts(random.Random(3))
    return {"ppo_bluebird_prompts.jsonl": bluebird_train, "ppo_bluebird_prompts_eval.jsonl": bluebird_eval,
            "ppo_keyword_sft.jsonl": sft_rows(400, rng), "ppo_keyword_prompts.jsonl": prompt_rows(64, rng),
            "ppo_keyword_prompts_eval.jsonl": prompt_rows(16, rng)}


if __name__ == "__main__":
    for file_name, file_rows in all_sets().items():
        write(file_name, file_rows)
