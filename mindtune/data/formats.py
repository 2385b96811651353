"""Row checks and chat-message normalisation shared by every stage; `read_rows` reads any supported file, reporting bad rows as file:line."""
import json
from typing import List, Tuple

from mindtune.atomic import atomic_write
from mindtune.errors import DataError

ROLES = ("system", "user", "assistant")


def read_rows(path: str, key: str = "data.train", columns: dict = None) -> List[Tuple[str, dict]]:
    """[(where, row)] of a JSON Lines, JSON array, Parquet or Arrow file, normalised (column mapping, ShareGPT);
    `where` is `file:line` (JSON Lines) or `file:row N`. The first bad row raises DataError."""
    from mindtune.data.sources import read_source_rows
    return read_source_rows(path, key, columns)


def write_rows(path: str, rows):
    """Write dicts as JSON Lines atomically (a temporary file renamed over `path`)."""
    with atomic_write(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _text(row: dict, field: str, where: str, required: bool = True) -> str:
    value = row.get(field)
    if value is None:
        if required:
            raise DataError(f"{where}: missing field {field!r}")
        return ""
    if not isinstance(value, str):
        raise DataError(f"{where}: field {field!r} must be a string, got {type(value).__name__}")
    return value


def check_messages(messages, where: str, field: str = "messages") -> list:
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: {field!r} must be a non-empty list of {{role, content}} objects")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise DataError(f"{where}: {field}[{i}] needs 'role' and 'content'")
        if message["role"] not in ROLES:
            raise DataError(f"{where}: {field}[{i}] has role {message['role']!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(message["content"], str):
            raise DataError(f"{where}: {field}[{i}].content must be a string")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def sft_messages(row: dict, where: str) -> list:
    """An SFT row as chat messages: `{"messages": [...]}` or alpaca `{"instruction","input","output"}`."""
    if "messages" in row:
        messages = check_messages(row["messages"], where)
        if not any(m["role"] == "assistant" for m in messages):
            raise DataError(f"{where}: 'messages' has no assistant turn to learn from")
        return messages
    if "instruction" not in row and "output" not in row:
        raise DataError(f"{where}: expected 'messages' or alpaca fields 'instruction'/'input'/'output'")
    instruction = _text(row, "instruction", where)
    extra = _text(row, "input", where, required=False)
    output = _text(row, "output", where)
    if not output.strip():
        raise DataError(f"{where}: field 'output' is empty")
    prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    messages = [{"role": "system", "content": _text(row, "system", where)}] if row.get("system") else []
    return messages + [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]


def prompt_text(row: dict, where: str, tokenizer, raw: bool = False) -> str:
    """The text a prompt row stands for: `{"messages"}` through the chat template with the assistant turn opened;
    `{"prompt"}` as a user turn (or plain text with `raw`, or when the model has no chat template)."""
    if "messages" in row:
        if not tokenizer.chat_template:
            raise DataError(f"{where}: 'messages' rows need a chat template and the model has none")
        return tokenizer.apply_chat_template(check_messages(row["messages"], where), add_generation_prompt=True)
    if "prompt" not in row:
        raise DataError(f"{where}: expected a 'prompt' or 'messages' field")
    text = _text(row, "prompt", where)
    if raw or not tokenizer.chat_template:
        return text
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
