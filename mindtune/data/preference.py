"""Preference pairs (reward-model training) and scored responses, as fixed-length token sequences.

One convention covers every row form: a row is a conversation prefix plus two alternative final assistant turns.

    prompt    the prefix: a string (one user turn) or a list of {role, content} messages; may be omitted when
              chosen/rejected are whole conversations
    chosen    the preferred ending: a string (one assistant turn) or a list of messages
    rejected  the other ending, in the same form
    margin    optional number: the loss asks r_chosen - r_rejected to exceed it
    system    optional system prompt (string form only)

The full conversations are prompt + chosen and prompt + rejected. They must end in an assistant turn and agree
on everything before it, so TRL's conversational rows ({"chosen": [...], "rejected": [...]} as whole
conversations that differ in the last assistant turn) and its explicit-prompt rows both fit.

Rows to score (`mindtune score`) are {"prompt", "response"} (the same prompt forms) or {"messages": [...]}
ending with the assistant turn to score. Each conversation is rendered with the model's chat template, right
padded to max_length with the pad id, and its score is read at its last real token.
"""
import math
from dataclasses import dataclass

import numpy as np

from mindtune.data.formats import check_messages, read_rows
from mindtune.data.sft import Encoded, encode_conversation, reject_pad_token, to_arrays
from mindtune.errors import DataError


@dataclass
class PreferenceSet:
    """N encoded pairs: token ids [N, L] (right padded), index of the last real token [N], margins [N], and
    SFT-style labels of each final response (labels[t] is the token at t + 1; DPO's log-probabilities)."""
    chosen: np.ndarray
    rejected: np.ndarray
    chosen_last: np.ndarray
    rejected_last: np.ndarray
    margin: np.ndarray
    dropped: int = 0
    chosen_labels: np.ndarray = None     # [N, L] pre-shifted labels on the final response's tokens (IGNORE elsewhere)
    rejected_labels: np.ndarray = None

    def __len__(self):
        return len(self.chosen)


# -- rows -> conversations -------------------------------------------------------------------------------------
def _turns(value, where: str, field: str, role: str) -> list:
    """A string (one turn with `role`) or a list of messages."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list):
        return check_messages(value, where, field)
    raise DataError(f"{where}: field {field!r} must be a string or a list of messages, got {type(value).__name__}")


def _prefix(row: dict, where: str) -> list:
    prompt = row.get("prompt")
    messages = []
    if row.get("system") is not None:
        if not isinstance(row["system"], str):
            raise DataError(f"{where}: field 'system' must be a string")
        messages.append({"role": "system", "content": row["system"]})
    if prompt is not None:
        if isinstance(prompt, str) and not prompt.strip():
            raise DataError(f"{where}: field 'prompt' is empty")
        messages += _turns(prompt, where, "prompt", "user")
    return messages


def _conversation(prefix: list, row: dict, where: str, field: str) -> list:
    if row.get(field) is None:
        raise DataError(f"{where}: missing field {field!r}")
    full = prefix + _turns(row[field], where, field, "assistant")
    if full[-1]["role"] != "assistant":
        raise DataError(f"{where}: {field!r} must end with an assistant turn, not {full[-1]['role']!r}")
    if not full[-1]["content"].strip():
        raise DataError(f"{where}: field {field!r} has an empty response")
    if len(full) < 2:
        raise DataError(f"{where}: missing field 'prompt' (nothing comes before the {field} response)")
    return full


def preference_pair(row: dict, where: str):
    """(chosen conversation, rejected conversation, margin) of one preference row; DataError names the line."""
    prefix = _prefix(row, where)
    chosen = _conversation(prefix, row, where, "chosen")
    rejected = _conversation(prefix, row, where, "rejected")
    if chosen[:-1] != rejected[:-1]:
        raise DataError(f"{where}: 'chosen' and 'rejected' must share every turn before their last assistant turn")
    if chosen[-1]["content"] == rejected[-1]["content"]:
        raise DataError(f"{where}: 'chosen' and 'rejected' are identical")
    margin = row.get("margin", 0.0)
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin):
        raise DataError(f"{where}: field 'margin' must be a finite number, got {margin!r}")
    return chosen, rejected, float(margin)


def scored_conversation(row: dict, where: str) -> list:
    """The conversation a `score` row asks about: {"prompt","response"} or {"messages": [..., assistant]}. A row
    written by `mindtune generate` ({"prompt","output"}) is scored as its prompt and output."""
    if "messages" in row:
        messages = check_messages(row["messages"], where)
        if messages[-1]["role"] != "assistant":
            raise DataError(f"{where}: 'messages' must end with the assistant turn to score")
        if not messages[-1]["content"].strip():
            raise DataError(f"{where}: the last assistant turn is empty")
        return messages
    if "prompt" not in row and "response" not in row:
        raise DataError(f"{where}: expected 'prompt' and 'response' fields, or 'messages'")
    field = "output" if "response" not in row and "output" in row else "response"
    return _conversation(_prefix(row, where), row, where, field)


# -- conversations -> token sequences --------------------------------------------------------------------------
def encode_for_reward(tokenizer, messages: list, max_length: int, truncation: str, pad_id: int, where: str):
    """Token ids of a conversation cut to max_length, or None when the row must be dropped.

    keep_response drops the oldest tokens before the final assistant turn and refuses to cut that turn (its end
    is where the score is read); right cuts the end; drop skips every row that does not fit.
    """
    enc = encode_response(tokenizer, messages, max_length, truncation, pad_id, where)
    return None if enc is None else enc.tokens


def encode_response(tokenizer, messages: list, max_length: int, truncation: str, pad_id: int, where: str):
    """As encode_for_reward, but an Encoded whose marks cover the final assistant turn only (its text and
    end-of-turn tokens): the response whose log-probability DPO compares."""
    enc = encode_conversation(tokenizer, messages)
    reject_pad_token(enc.tokens, pad_id, where)
    start = _last_turn_start(enc)
    marks = [int(i >= start) for i in range(len(enc.tokens))]
    n = len(enc.tokens)
    if n <= max_length:
        return Encoded(enc.tokens, marks)
    if truncation == "right":
        return Encoded(enc.tokens[:max_length], marks[:max_length])
    if truncation == "keep_response" and n - max_length <= start:
        return Encoded(enc.tokens[n - max_length:], marks[n - max_length:])
    return None


def _last_turn_start(enc: Encoded) -> int:
    """Index of the first token of the last assistant turn (the last run of trainable marks)."""
    k = max((i for i, t in enumerate(enc.trainable) if t), default=len(enc.tokens))
    while k > 0 and enc.trainable[k - 1]:
        k -= 1
    return k


def pad_sequences(sequences: list, max_length: int, pad_id: int):
    """(ids int32 [N, max_length] right padded, index of each last real token int32 [N])."""
    ids = np.full((len(sequences), max_length), pad_id, np.int32)
    last = np.zeros(len(sequences), np.int32)
    for i, seq in enumerate(sequences):
        ids[i, :len(seq)] = seq
        last[i] = len(seq) - 1
    return ids, last


def load_preferences(path: str, tokenizer, max_length: int, pad_id: int, truncation: str = "keep_response",
                     key: str = "data.train", limit: int = 0) -> PreferenceSet:
    """Read, check and encode a preference file. A pair is dropped when either side does not fit."""
    rows = read_rows(path, key)
    if limit:
        rows = rows[:limit]
    chosen, rejected, margins, dropped = [], [], [], 0
    for where, row in rows:
        good, bad, margin = preference_pair(row, where)
        c = encode_response(tokenizer, good, max_length, truncation, pad_id, where)
        r = encode_response(tokenizer, bad, max_length, truncation, pad_id, where)
        if c is None or r is None:
            dropped += 1
            continue
        if c.tokens == r.tokens:  # distinct texts can still collide after right truncation
            raise DataError(f"{where}: 'chosen' and 'rejected' are identical within data.max_length={max_length}")
        chosen.append(c)
        rejected.append(r)
        margins.append(margin)
    if not chosen:
        raise DataError(f"{path}: no preference pair fits data.max_length={max_length}")
    c_ids, c_last = pad_sequences([e.tokens for e in chosen], max_length, pad_id)
    r_ids, r_last = pad_sequences([e.tokens for e in rejected], max_length, pad_id)
    c_labels = np.stack([to_arrays(e, max_length, pad_id)[1] for e in chosen])
    r_labels = np.stack([to_arrays(e, max_length, pad_id)[1] for e in rejected])
    return PreferenceSet(c_ids, r_ids, c_last, r_last, np.asarray(margins, np.float32), dropped, c_labels, r_labels)
