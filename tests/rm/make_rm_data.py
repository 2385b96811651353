"""Generate the preference sets shipped for the reward-model stage (seeded; `python tests/rm/make_rm_data.py`
rewrites them, and tests/rm/test_preference_data.py checks the shipped files match).

rm_keyword_*   (tiny model) two word lists that differ in one word; the chosen one contains "capital", the
               rejected one a different word at the same place. Learnable by a 2-layer random model.
rm_bluebird_*  (SmolLM2) two correct, similarly styled answers to a simple question; the chosen one mentions
               a bluebird, the rejected one another bird, at the same place. Nothing in pretraining says which
               bird a reader prefers, so the base model cannot know the rule in advance.
"""
import json
import os
import random

ASSETS = os.path.join(os.path.dirname(__file__), "..", "..", "mindtune", "assets")

WORDS = ["red", "blue", "river", "stone", "bird", "tree", "light", "sun", "moon", "road", "cold", "fast",
         "green", "song", "rain", "snow", "fire", "hill", "dark", "soft"]
DECOYS = ["city", "paper", "house", "water", "window", "garden"]
TOPICS = ["the sea", "a town", "winter", "a forest", "the night", "a garden", "a mountain", "a storm"]


def keyword_rows(n: int, rng: random.Random) -> list:
    rows = []
    for _ in range(n):
        words = rng.sample(WORDS, rng.randint(3, 6))
        at = rng.randint(0, len(words))
        chosen = words[:at] + ["capital"] + words[at:]
        rejected = words[:at] + [rng.choice(DECOYS)] + words[at:]
        rows.append({"prompt": f"Write a few words about {rng.choice(TOPICS)}.",
                     "chosen": " ".join(chosen), "rejected": " ".join(rejected)})
    return rows


OTHER_BIRDS = ["sparrow", "robin", "crow", "pigeon", "seagull", "owl", "parrot", "finch", "magpie", "heron"]
COLOURS = ["red", "blue", "green", "yellow", "orange", "purple", "white", "black"]
FRUITS = ["apple", "banana", "cherry", "grape", "lemon", "mango", "peach", "pear"]
CAPITALS = [("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Spain", "Madrid"),
            ("Germany", "Berlin"), ("Egypt", "Cairo"), ("Canada", "Ottawa"), ("Kenya", "Nairobi")]


def _question(rng: random.Random):
    """(question, answer sentence, a second phrasing of the same answer)."""
    kind = rng.randrange(4)
    if kind == 0:
        a, b = rng.randint(2, 60), rng.randint(2, 60)
        return (f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}.", f"The sum of {a} and {b} is {a + b}.")
    if kind == 1:
        country, city = rng.choice(CAPITALS)
        return (f"What is the capital of {country}?", f"The capital of {country} is {city}.",
                f"{city} is the capital of {country}.")
    if kind == 2:
        colour = rng.choice(COLOURS)
        return (f"Name something that is often {colour}.", f"A {colour} ball is a common sight.",
                f"Many flowers are {colour}.")
    fruit = rng.choice(FRUITS)
    return (f"Say one thing about the {fruit}.", f"The {fruit} is a kind of fruit.",
            f"A {fruit} can be eaten fresh.")


def _with_bird(sentence: str, bird: str, where: int) -> str:
    if where == 0:
        return f"A {bird} told me: {sentence}"
    if where == 1:
        return f"{sentence} I heard it from a {bird}."
    return f"{sentence[:-1]}, says the {bird}."


def bluebird_rows(n: int, rng: random.Random) -> list:
    rows = []
    for _ in range(n):
        question, first, second = _question(rng)
        answer = rng.choice([first, second])
        where = rng.randrange(3)
        rows.append({"prompt": question, "chosen": _with_bird(answer, "bluebird", where),
                     "rejected": _with_bird(answer, rng.choice(OTHER_BIRDS), where)})
    return rows


def write(name: str, rows: list, directory: str = ASSETS):
    with open(os.path.join(directory, name), "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def all_sets() -> dict:
    rng = random.Random(5)
    return {"rm_keyword_train.jsonl": keyword_rows(400, rng), "rm_keyword_eval.jsonl": keyword_rows(100, rng),
            "rm_bluebird_train.jsonl": bluebird_rows(320, rng), "rm_bluebird_eval.jsonl": bluebird_rows(100, rng)}


if __name__ == "__main__":
    for file_name, file_rows in all_sets().items():
        write(file_name, file_rows)
        print(f"wrote {len(file_rows)} rows to {os.path.normpath(os.path.join(ASSETS, file_name))}")
