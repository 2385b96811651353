"""SFT rows -> fixed-length token sequences with labels on the response tokens only.

The conversation is rendered with the model's chat template one turn at a time; each assistant turn's text
(its content and end-of-turn tokens) carries labels, everything else gets IGNORE. Labels are already shifted:
labels[t] is the target for the logits at position t.
"""
from dataclasses import dataclass

import numpy as np

from mindtune.data.formats import read_rows
from mindtune.errors import DataError

IGNORE = -100


@dataclass
class Encoded:
    tokens: list      # token ids of the whole rendered conversation
    trainable: list   # 1 where the token is part of an assistant turn (or everywhere with train_on_prompt)


def encode_conversation(tokenizer, messages, train_on_prompt: bool = False) -> Encoded:
    tokens, trainable = [], []
    rendered = ""
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            prompt = tokenizer.apply_chat_template(messages[:i], add_generation_prompt=True) if i else ""
            _append(tokenizer, tokens, trainable, prompt[len(rendered):], train_on_prompt)
            rendered = prompt
            full = tokenizer.apply_chat_template(messages[: i + 1])
            _append(tokenizer, tokens, trainable, full[len(rendered):], True)
            rendered = full
    if not (messages and messages[-1]["role"] == "assistant" and rendered):   # else the whole is rendered already
        rest = tokenizer.apply_chat_template(messages)[len(rendered):]
        _append(tokenizer, tokens, trainable, rest, train_on_prompt)
    return Encoded(tokens, trainable)


def reject_pad_token(tokens, pad_id: int, where: str):
    """MindFormers masks attention to every key equal to the pad id, so real text must never contain it."""
    if pad_id in tokens:
        raise DataError(f"{where}: the text contains the pad token (id {pad_id}), which attention would mask")


def _append(tokenizer, tokens, trainable, text, label):
    if not text:
        return
    ids = tokenizer.encode(text)
    if tokens and tokenizer.add_bos and tokenizer.bos_id is not None:
        ids = ids[1:]   # Tokenizer.encode adds BOS to every piece; keep only the conversation's first
    tokens.extend(ids)
    trainable.extend([int(label)] * len(ids))


def truncate(enc: Encoded, max_length: int, strategy: str):
    """Fit a sequence into max_length tokens; None when the row must be dropped."""
    n = len(enc.tokens)
    if n <= max_length:
        return enc
    if strategy == "drop":
        return None
    if strategy == "right":
        return Encoded(enc.tokens[:max_length], enc.trainable[:max_length])
    first_label = next((k for k, t in enumerate(enc.trainable) if t), n)
    cut = min(n - max_length, first_label)  # keep_response: drop the oldest prompt tokens first
    tokens, trainable = enc.tokens[cut:][:max_length], enc.trainable[cut:][:max_length]
    return Encoded(tokens, trainable)


def to_arrays(enc: Encoded, max_length: int, pad_id: int):
    """(input_ids, labels), both int32 [max_length]; right padding with the model's pad id."""
    input_ids = np.full(max_length, pad_id, np.int32)
    labels = np.full(max_length, IGNORE, np.int32)
    n = len(enc.tokens)
    input_ids[:n] = enc.tokens
    for t in range(n - 1):
        if enc.trainable[t + 1]:
            labels[t] = enc.tokens[t + 1]
    return input_ids, labels


def load_sft(path: str, tokenizer, max_length: int, pad_id: int, truncation: str = "keep_response",
             train_on_prompt: bool = False, key: str = "data.train", limit: int = 0):
    """Read and encode an SFT file in memory: (input_ids [N, L], labels [N, L], number of rows dropped). The
    stages read through the cache (mindtune.data.loading); this is the small-file, in-memory form of the same
    encoder."""
    from mindtune.data.encoders import Encoding, encode_row

    encoding = Encoding("sft", max_length, truncation, train_on_prompt, pad_id)
    inputs, targets, dropped = [], [], 0
    rows = read_rows(path, key)
    for where, row in rows[:limit] if limit else rows:
        encoded = encode_row(tokenizer, encoding, row, where, key)
        if encoded is None:
            dropped += 1
            continue
        ids, labels = to_arrays(Encoded(encoded["tokens"], encoded["marks"]), max_length, pad_id)
        inputs.append(ids)
        targets.append(labels)
    if not inputs:
        raise DataError(f"{path}: no row fits data.max_length={max_length} with a response token left")
    return np.stack(inputs), np.stack(targets), dropped
