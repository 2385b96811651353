"""Preference rows: the accepted forms, their encoding, and bad rows reported as file:line."""
import json
import os
import random

import numpy as np
import pytest

from mindtune.data.preference import (encode_for_reward, load_preferences, pad_sequences, preference_pair,
                                      scored_conversation)
from mindtune.errors import DataError
from mindtune.models.loading import resolve_model

import make_rm_data

TOK = resolve_model("tiny").tokenizer
USER = {"role": "user", "content": "What is 2 plus 2?"}
GOOD = {"role": "assistant", "content": "4"}
BAD = {"role": "assistant", "content": "5"}


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def test_every_row_form_gives_the_same_pair():
    forms = [
        {"prompt": USER["content"], "chosen": "4", "rejected": "5"},
        {"chosen": [USER, GOOD], "rejected": [USER, BAD]},                 # TRL: whole conversations
        {"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]},           # TRL: explicit prompt
        {"prompt": USER["content"], "chosen": [GOOD], "rejected": "5"},
    ]
    for row in forms:
        assert preference_pair(row, "f:1") == ([USER, GOOD], [USER, BAD], 0.0)
    chosen, _, margin = preference_pair({"prompt": "q", "system": "be brief", "chosen": "a", "rejected": "b",
                                         "margin": 2}, "f:1")
    assert chosen[0] == {"role": "system", "content": "be brief"} and margin == 2.0


@pytest.mark.parametrize("row, message", [
    ({"prompt": "q", "rejected": "b"}, "missing field 'chosen'"),
    ({"prompt": "q", "chosen": "a"}, "missing field 'rejected'"),
    ({"chosen": "a", "rejected": "b"}, "missing field 'prompt'"),
    ({"prompt": "q", "chosen": "same", "rejected": "same"}, "identical"),
    ({"prompt": "q", "chosen": "  ", "rejected": "b"}, "'chosen' has an empty response"),
    ({"prompt": "q", "chosen": "a", "rejected": ""}, "'rejected' has an empty response"),
    ({"prompt": "", "chosen": "a", "rejected": "b"}, "'prompt' is empty"),
    ({"prompt": "q", "chosen": "a", "rejected": "b", "margin": "big"}, "'margin' must be a finite number"),
    ({"prompt": "q", "chosen": 3, "rejected": "b"}, "'chosen' must be a string or a list"),
    ({"chosen": [USER, GOOD], "rejected": [{"role": "user", "content": "other"}, BAD]}, "share every turn"),
    ({"chosen": [USER, GOOD], "rejected": [USER]}, "'rejected' must end with an assistant turn"),
    ({"chosen": [USER, {"role": "robot", "content": "x"}], "rejected": [USER, BAD]}, "role 'robot'"),
])
def test_bad_rows_name_file_and_line(tmp_path, row, message):
    path = write(tmp_path / "pairs.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}, "", row])
    with pytest.raises(DataError) as err:
        load_preferences(path, TOK, 64, 0)
    assert str(err.value).startswith(f"{path}:3: ") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_invalid_json_and_empty_file(tmp_path):
    path = write(tmp_path / "broken.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}, "{not json"])
    with pytest.raises(DataError, match=rf"{path}:2: invalid JSON"):
        load_preferences(path, TOK, 64, 0)
    empty = write(tmp_path / "empty.jsonl", [])
    with pytest.raises(DataError, match="no rows"):
        load_preferences(empty, TOK, 64, 0)


def test_encoding_padding_and_last_index(tmp_path):
    rows = [{"prompt": "What is 4 plus 5?", "chosen": "9", "rejected": "It is 7.", "margin": 0.5}]
    data = load_preferences(write(tmp_path / "p.jsonl", rows), TOK, 40, 0)
    for ids, last, text in ((data.chosen[0], data.chosen_last[0], "9"), (data.rejected[0], data.rejected_last[0],
                                                                          "It is 7.")):
        expected = TOK.encode(TOK.apply_chat_template([{"role": "user", "content": rows[0]["prompt"]},
                                                       {"role": "assistant", "content": text}]))
        assert ids[:len(expected)].tolist() == expected and (ids[len(expected):] == 0).all()
        assert last == len(expected) - 1
    assert data.margin.tolist() == [0.5] and data.chosen.dtype == np.int32


def test_truncation_keeps_the_response_end(tmp_path):
    messages = [{"role": "user", "content": "word " * 30}, {"role": "assistant", "content": "short answer"}]
    full = encode_for_reward(TOK, messages, 1000, "keep_response", 0, "f:1")
    kept = encode_for_reward(TOK, messages, 20, "keep_response", 0, "f:1")
    assert kept == full[-20:]
    assert encode_for_reward(TOK, messages, 20, "right", 0, "f:1") == full[:20]
    assert encode_for_reward(TOK, messages, 20, "drop", 0, "f:1") is None
    assert encode_for_reward(TOK, messages, 5, "keep_response", 0, "f:1") is None  # the response itself is longer
    path = write(tmp_path / "long.jsonl", [{"prompt": "word " * 30, "chosen": "a", "rejected": "b"},
                                           {"prompt": "q", "chosen": "a", "rejected": "b"}])
    data = load_preferences(path, TOK, 24, 0, truncation="drop")
    assert len(data) == 1 and data.dropped == 1


def test_scored_rows():
    assert scored_conversation({"prompt": "q", "response": "a"}, "f:1") == [
        {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert scored_conversation({"messages": [USER, GOOD]}, "f:1") == [USER, GOOD]
    for row, message in (({"prompt": "q"}, "missing field 'response'"), ({"text": "q"}, "'prompt' and 'response'"),
                         ({"messages": [USER]}, "end with the assistant turn")):
        with pytest.raises(DataError, match=message):
            scored_conversation(row, "f:1")
    ids, last = pad_sequences([[5, 6, 7], [8]], 4, 0)
    assert ids.tolist() == [[5, 6, 7, 0], [8, 0, 0, 0]] and last.tolist() == [2, 0]


def test_shipped_sets_are_what_the_generator_writes(tmp_path):
    for name, rows in make_rm_data.all_sets().items():
        make_rm_data.write(name, rows, str(tmp_path))
        with open(os.path.join(make_rm_data.ASSETS, name), encoding="utf-8") as shipped:
            assert shipped.read() == (tmp_path / name).read_text(), name
    # the keyword rule holds in every pair, and the two sides differ in one word only
    for row in make_rm_data.keyword_rows(50, random.Random(0)):
        c, r = row["chosen"].split(), row["rejected"].split()
        assert "capital" in c and "capital" not in r and len(c) == len(r)
        assert sum(a != b for a, b in zip(c, r)) == 1
