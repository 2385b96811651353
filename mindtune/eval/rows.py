"""Evaluation rows: what to ask the model and what the right answer is, checked with file:line errors.

- generation rows: alpaca `{"instruction", "input", "output"}`, `{"messages": [...]}` (the reference is the last
  assistant turn, the prompt everything before it), or `{"prompt" | "question", "answer"}`;
- multiple-choice rows: `{"question", "choices": [...], "answer": index or the text of a choice}`.
"""
from dataclasses import dataclass
from typing import List, Optional

from mindtune.data.formats import _text, check_messages, read_rows, sft_messages
from mindtune.errors import DataError


@dataclass
class EvalRow:
    where: str                     # file:line
    row: dict                      # the row as read
    messages: List[dict]           # the prompt as chat messages (ending with a user turn)
    reference: Optional[str] = None         # generation rows
    choices: Optional[List[str]] = None     # multiple-choice rows
    answer: Optional[int] = None            # index of the right choice

    @property
    def is_choice(self) -> bool:
        return self.choices is not None


def parse_row(where: str, row: dict) -> EvalRow:
    if "choices" in row:
        return _choice_row(where, row)
    if "messages" in row:
        messages = check_messages(row["messages"], where)
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        if last is None:
            raise DataError(f"{where}: 'messages' has no assistant turn to use as the reference")
        if last == 0:
            raise DataError(f"{where}: 'messages' has no prompt before its assistant turn")
        return _generation_row(where, row, messages[:last], messages[last]["content"])
    if "answer" in row:
        prompt = _prompt(where, row)
        answer = row["answer"]
        if not isinstance(answer, str):
            raise DataError(f"{where}: field 'answer' must be a string (or give 'choices' for multiple choice)")
        return _generation_row(where, row, [{"role": "user", "content": prompt}], answer)
    if "instruction" in row or "output" in row:
        if "output" not in row:
            raise DataError(f"{where}: no reference answer: missing field 'output'")
        messages = sft_messages(row, where)
        return _generation_row(where, row, messages[:-1], messages[-1]["content"])
    raise DataError(f"{where}: no reference answer: expected alpaca 'output', 'messages' with an assistant turn, "
                    "'answer', or 'choices' with 'answer'")


def read_eval_rows(path: str, key: str = "--input", limit: Optional[int] = None,
                   columns: Optional[dict] = None) -> List[EvalRow]:
    rows = read_rows(path, key=key, columns=columns)
    if limit:
        rows = rows[:limit]
    return [parse_row(where, row) for where, row in rows]


def _prompt(where: str, row: dict) -> str:
    field = "question" if "question" in row else "prompt"
    text = _text(row, field, where)
    if not text.strip():
        raise DataError(f"{where}: field {field!r} is empty")
    return text


def _generation_row(where, row, messages, reference) -> EvalRow:
    if not reference.strip():
        raise DataError(f"{where}: the reference answer is empty")
    return EvalRow(where, row, messages, reference=reference)


def _choice_row(where: str, row: dict) -> EvalRow:
    prompt = _prompt(where, row)
    choices = row["choices"]
    if not isinstance(choices, list) or not choices:
        raise DataError(f"{where}: 'choices' must be a non-empty list of strings")
    if not all(isinstance(c, str) and c.strip() for c in choices):
        raise DataError(f"{where}: every choice must be a non-empty string")
    if "answer" not in row:
        raise DataError(f"{where}: missing field 'answer' (the index or text of the right choice)")
    answer = row["answer"]
    if isinstance(answer, bool) or not isinstance(answer, (int, str)):
        raise DataError(f"{where}: 'answer' must be a choice index or the text of a choice")
    if isinstance(answer, int):
        if not 0 <= answer < len(choices):
            raise DataError(f"{where}: answer index {answer} is out of range for {len(choices)} choices")
        index = answer
    elif answer in choices:
        index = choices.index(answer)
    else:
        raise DataError(f"{where}: answer {answer!r} is not one of the choices")
    return EvalRow(where, row, [{"role": "user", "content": prompt}], choices=list(choices), answer=index)
