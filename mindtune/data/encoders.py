"""One row -> the token sequences a stage trains on, for each kind of row the stages read.

    sft         {"instruction","input","output"} or {"messages"}: tokens, and marks (1 on the tokens that carry
                labels: the assistant turns, or everything with train_on_prompt)
    preference  {"prompt","chosen","rejected"[,"margin"]}: both conversations' tokens, marks on each final
                response, the margin
    prompt      {"prompt"} or {"messages"}: the prompt's tokens, and the row itself (GRPO's rewards read its
                other fields)

An encoder returns a dict of the fields in SCHEMA[kind], None for a row that does not fit max_length (counted as
dropped), or raises DataError naming the row's file:line.
"""
import json
from dataclasses import asdict, dataclass

from mindtune.data.formats import prompt_text, sft_messages
from mindtune.data.preference import encode_response, preference_pair
from mindtune.data.sft import encode_conversation, reject_pad_token, truncate
from mindtune.errors import DataError

STAGE_KINDS = {"sft": "sft", "rm": "preference", "dpo": "preference", "ppo": "prompt", "grpo": "prompt"}

# field -> (variable-length sequence or one value per row, dtype)
SCHEMA = {
    "sft": {"tokens": ("seq", "int32"), "marks": ("seq", "uint8")},
    "preference": {"chosen": ("seq", "int32"), "chosen_marks": ("seq", "uint8"), "rejected": ("seq", "int32"),
                   "rejected_marks": ("seq", "uint8"), "margin": ("value", "float32")},
    "prompt": {"tokens": ("seq", "int32"), "row": ("seq", "uint8")},
}


@dataclass(frozen=True)
class Encoding:
    """Everything besides the tokenizer and the data that decides what a row encodes to."""
    kind: str
    max_length: int
    truncation: str = "keep_response"
    train_on_prompt: bool = False
    pad_id: int = 0

    def settings(self) -> dict:
        values = asdict(self)
        if self.kind != "sft":
            values.pop("train_on_prompt")
        return values


def encode_row(tokenizer, encoding: Encoding, row: dict, where: str, key: str = "data.train"):
    return ENCODERS[encoding.kind](tokenizer, encoding, row, where, key)


def _sft(tokenizer, e: Encoding, row, where, key):
    enc = encode_conversation(tokenizer, sft_messages(row, where), e.train_on_prompt)
    reject_pad_token(enc.tokens, e.pad_id, where)
    enc = truncate(enc, e.max_length, e.truncation)
    if enc is None or not any(enc.trainable[1:]):   # labels[t] comes from token t + 1: nothing left to learn
        return None
    return {"tokens": enc.tokens, "marks": enc.trainable}


def _preference(tokenizer, e: Encoding, row, where, key):
    good, bad, margin = preference_pair(row, where)
    c = encode_response(tokenizer, good, e.max_length, e.truncation, e.pad_id, where)
    r = encode_response(tokenizer, bad, e.max_length, e.truncation, e.pad_id, where)
    if c is None or r is None:
        return None
    if c.tokens == r.tokens:  # distinct texts can still collide after right truncation
        raise DataError(f"{where}: 'chosen' and 'rejected' are identical within data.max_length={e.max_length}")
    return {"chosen": c.tokens, "chosen_marks": c.trainable, "rejected": r.tokens,
            "rejected_marks": r.trainable, "margin": margin}


def _prompt(tokenizer, e: Encoding, row, where, key):
    return {"tokens": prompt_ids(tokenizer, row, where, e.max_length, e.pad_id, key),
            "row": json.dumps(row, ensure_ascii=False).encode("utf-8")}


def prompt_ids(tokenizer, row: dict, where: str, max_length: int, pad_id: int, key: str = "data.train") -> list:
    """Token ids of a prompt row; a prompt longer than `max_length` tokens, an empty one, or one containing the
    pad id stops with its file:line."""
    ids = tokenizer.encode(prompt_text(row, where, tokenizer))
    if not ids:
        raise DataError(f"{where}: the prompt is empty")
    if len(ids) > max_length:
        raise DataError(f"{where}: the prompt has {len(ids)} tokens, more than data.max_length={max_length} "
                        f"({key}); raise data.max_length or shorten the prompt")
    reject_pad_token(ids, pad_id, where)
    return ids


ENCODERS = {"sft": _sft, "preference": _preference, "prompt": _prompt}
