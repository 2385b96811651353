"""Regenerate the shipped demo assets: a small instruction set, a preference set, and the tiny BPE tokenizer.

    python tools/make_demo_assets.py

The rows are synthetic (arithmetic, reversing words, colours of things, capitals) so that a tiny model can
learn them within a demo; the tokenizer is a byte-level BPE with ChatML special tokens, trained on those rows.
"""
import json
import os
import random

ASSETS = os.path.join(os.path.dirname(__file__), "..", "mindtune", "assets")
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

COLOURS = {"grass": "green", "sky": "blue", "snow": "white", "coal": "black", "blood": "red", "banana": "yellow",
           "orange": "orange", "violet": "purple", "chocolate": "brown", "cloud": "white", "lemon": "yellow",
           "leaf": "green", "ocean": "blue", "cherry": "red", "night": "black", "milk": "white"}
CAPITALS = {"France": "Paris", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo", "Egypt": "Cairo",
            "Kenya": "Nairobi", "Peru": "Lima", "Norway": "Oslo", "Chile": "Santiago", "Cuba": "Havana",
            "Greece": "Athens", "Poland": "Warsaw", "Canada": "Ottawa", "China": "Beijing", "India": "New Delhi"}
WORDS = ["apple", "river", "stone", "music", "light", "table", "garden", "window", "pencil", "planet", "silver",
         "bridge", "forest", "candle", "mirror", "rocket", "butter", "dragon", "castle", "winter"]


def sft_rows(rng):
    rows = []
    for _ in range(120):
        a, b = rng.randint(0, 49), rng.randint(0, 49)
        rows.append({"instruction": f"What is {a} plus {b}?", "input": "", "output": f"{a} plus {b} is {a + b}."})
    for word in WORDS:
        rows.append({"instruction": "Reverse the word.", "input": word, "output": word[::-1]})
        rows.append({"instruction": "Spell the word with dashes.", "input": word, "output": "-".join(word)})
    for thing, colour in COLOURS.items():
        rows.append({"instruction": f"What colour is {thing}?", "input": "", "output": f"The {thing} is {colour}."})
    for country, city in CAPITALS.items():
        rows.append({"messages": [{"role": "user", "content": f"What is the capital of {country}?"},
                                  {"role": "assistant", "content": f"The capital of {country} is {city}."}]})
    rng.shuffle(rows)
    return rows


def preference_rows(rng):
    """The chosen answer is right and polite; the rejected one is wrong (a rule a reward model can learn)."""
    rows = []
    for _ in range(120):
        a, b = rng.randint(0, 49), rng.randint(0, 49)
        wrong = a + b + rng.choice([-3, -2, -1, 1, 2, 3])
        rows.append({"prompt": f"What is {a} plus {b}?", "chosen": f"{a} plus {b} is {a + b}.",
                     "rejected": f"{a} plus {b} is {wrong}."})
    return rows


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def train_tokenizer(texts, directory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    os.makedirs(directory, exist_ok=True)
    tok.save(os.path.join(directory, "tokenizer.json"))
    meta = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
            "add_bos": False, "chat_template": CHATML}
    with open(os.path.join(directory, "tokenizer_meta.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)


def main():
    rng = random.Random(0)
    rows = sft_rows(rng)
    split = len(rows) - 24
    write_jsonl(os.path.join(ASSETS, "demo_sft_train.jsonl"), rows[:split])
    write_jsonl(os.path.join(ASSETS, "demo_sft_eval.jsonl"), rows[split:])
    prefs = preference_rows(rng)
    write_jsonl(os.path.join(ASSETS, "demo_pref_train.jsonl"), prefs[:96])
    write_jsonl(os.path.join(ASSETS, "demo_pref_eval.jsonl"), prefs[96:])
    texts = [json.dumps(r) for r in rows + prefs] + ["system user assistant"] * 10
    train_tokenizer(texts, os.path.join(ASSETS, "tiny_tokenizer"))


if __name__ == "__main__":
    main()
