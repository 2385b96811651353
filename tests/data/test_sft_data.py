"""SFT data: chat rendering, prompt masking, truncation, tokenizers, and bad rows reported as file:line."""
import json

import numpy as np
import pytest

from mindtune.data.formats import read_rows, sft_messages
from mindtune.data.sft import IGNORE, Encoded, encode_conversation, load_sft, to_arrays, truncate
from mindtune.data.tokenizer import load_tokenizer
from mindtune.errors import DataError


@pytest.fixture(scope="module")
def tok(assets_dir):
    return load_tokenizer(f"{assets_dir}/tiny_tokenizer")


@pytest.fixture(scope="module")
def assets_dir():
    import os
    return os.path.join(os.path.dirname(__file__), "..", "..", "mindtune", "assets")


def test_exactly_the_response_tokens_carry_labels(tok):
    messages = sft_messages({"instruction": "What is 3 plus 4?", "input": "", "output": "7."}, "row")
    enc = encode_conversation(tok, messages)
    # The whole rendered conversation, encoded at once, gives the same tokens as the turn-by-turn encoding.
    assert enc.tokens == tok.encode(tok.apply_chat_template(messages))
    response_ids = tok.encode("7.<|im_end|>\n")
    labelled = [t for t, m in zip(enc.tokens, enc.trainable) if m]
    assert labelled == response_ids
    ids, labels = to_arrays(enc, 48, pad_id=0)
    positions = np.nonzero(labels != IGNORE)[0]
    # labels are shifted: the logits at position t predict token t+1
    assert list(labels[positions]) == response_ids
    assert list(positions + 1) == [k for k, m in enumerate(enc.trainable) if m]
    assert (ids[len(enc.tokens):] == 0).all()


def test_multi_turn_labels_every_assistant_turn(tok):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"},
                {"role": "assistant", "content": "Goodbye."}]
    enc = encode_conversation(tok, messages)
    text = tok.decode([t for t, m in zip(enc.tokens, enc.trainable) if m], skip_special_tokens=False)
    assert text == "Hello.<|im_end|>\nGoodbye.<|im_end|>\n"
    everything = encode_conversation(tok, messages, train_on_prompt=True)
    assert all(everything.trainable)


def test_truncation_keeps_the_response():
    enc = Encoded(tokens=list(range(10, 20)), trainable=[0] * 6 + [1] * 4)
    kept = truncate(enc, 6, "keep_response")
    assert kept.tokens == [14, 15, 16, 17, 18, 19] and kept.trainable == [0, 0, 1, 1, 1, 1]
    assert truncate(enc, 6, "right").tokens == list(range(10, 16))
    assert truncate(enc, 6, "drop") is None
    assert truncate(enc, 10, "drop") is enc


def test_load_sft_shapes(tok, assets_dir):
    x, y, dropped = load_sft(f"{assets_dir}/demo_sft_train.jsonl", tok, 64, pad_id=0)
    assert x.shape == y.shape and x.shape[1] == 64 and x.dtype == np.int32
    assert dropped == 0 and ((y != IGNORE).sum(axis=1) > 0).all()


def test_sentencepiece_tokenizer(tmp_path):
    import sentencepiece as spm

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"the number {i} follows {i - 1} and comes before {i + 1}" for i in range(300)))
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "sp"), vocab_size=120,
                                   pad_id=3, user_defined_symbols=[], minloglevel=2)
    tok = load_tokenizer(str(tmp_path / "sp.model"))
    ids = tok.encode("the number 12 follows 11")
    assert ids[0] == tok.bos_id == 1 and tok.pad_id == 3 and tok.eos_id == 2
    assert tok.decode(ids) == "the number 12 follows 11"


@pytest.mark.parametrize("line, expected", [
    ('{"instruction": "a", "output": ', "invalid JSON"),
    ('{"instruction": "a"}', "missing field 'output'"),
    ('{"instruction": "a", "output": "  "}', "'output' is empty"),
    ('{"messages": [{"role": "user", "content": "hi"}]}', "no assistant turn"),
    ('{"messages": [{"role": "robot", "content": "hi"}]}', "role 'robot'"),
    ('{"prompt": "a"}', "expected 'messages' or alpaca"),
    ('[1, 2]', "expected a JSON object"),
])
def test_bad_rows_name_file_and_line(tok, tmp_path, line, expected):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"instruction": "ok", "output": "fine"}) + "\n\n" + line + "\n")
    with pytest.raises(DataError) as err:
        rows = read_rows(str(path))
        for where, row in rows:
            sft_messages(row, where)
    assert f"{path}:3" in str(err.value) and expected in str(err.value)


def test_json_array_files_are_accepted(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([{"instruction": "a", "output": "b"}, {"instruction": "c", "output": "d"}]))
    rows = read_rows(str(path))
    assert [w for w, _ in rows] == [f"{path}:row 1", f"{path}:row 2"]
