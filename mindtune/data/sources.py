"""Data sources: which files a config names (one path or a weighted mixture), how each file is read (JSON Lines,
JSON arrays, Parquet, Arrow) in chunks that worker processes can take, and how a row is normalised (column
mapping, ShareGPT conversations) before a stage's encoder sees it.

A row's location is `file:line` for JSON Lines and `file:row N` (1-based) for JSON arrays, Parquet and Arrow.
"""
import json
import os
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Tuple

from mindtune.errors import ConfigError, DataError

PARQUET = (".parquet", ".pq")
ARROW = (".arrow", ".feather", ".ipc")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system"}
CHUNK_BYTES = 4 << 20    # JSON Lines chunk handed to one worker (small enough for a smooth progress bar)


@dataclass(frozen=True)
class Source:
    """One data file of `data.train` / `data.eval` and how to read it."""
    path: str
    weight: float = 1.0
    columns: dict = field(default_factory=dict)   # mindtune field name -> the file's field name
    name: str = ""
    key: str = "data.train"                        # the config key that named it, for error messages

    @property
    def label(self) -> str:
        return self.name or os.path.splitext(os.path.basename(self.path))[0]


def parse_sources(value, key: str, columns: Optional[dict] = None) -> List[Source]:
    """`data.train` as sources: a path, or a list of paths / {path, weight, columns, name} entries."""
    columns = dict(columns or {})
    if value is None:
        return []
    if isinstance(value, str):
        return [Source(value, 1.0, columns, "", key)]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{key}: expected a file path or a list of {{path, weight}} entries, got {value!r}")
    out = []
    for i, entry in enumerate(value):
        where = f"{key}[{i}]"
        if isinstance(entry, str):
            entry = {"path": entry}
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a file path or a mapping with path and weight, got {entry!r}")
        unknown = set(entry) - {"path", "weight", "columns", "name"}
        if unknown:
            raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}; known keys: path, weight, columns, name")
        if not isinstance(entry.get("path"), str):
            raise ConfigError(f"{where}.path: required (a data file)")
        weight = entry.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
            raise ConfigError(f"{where}.weight: {weight!r} must be a number above 0")
        own = entry.get("columns") or {}
        check_columns(own, f"{where}.columns")
        out.append(Source(entry["path"], float(weight), {**columns, **own}, str(entry.get("name") or ""), where))
    labels = [s.label for s in out]
    for label in labels:
        if labels.count(label) > 1:
            raise ConfigError(f"{key}: two sources are both named {label!r}; give each a distinct `name`")
    return out


def check_columns(columns, key: str):
    if not isinstance(columns, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                for k, v in columns.items()):
        raise ConfigError(f"{key}: expected a mapping of mindtune field -> the file's field name, got {columns!r}")


def file_format(path: str) -> str:
    """jsonl, json (a JSON array), parquet or arrow: by extension, else by the first character of the file."""
    lower = path.lower()
    if lower.endswith(PARQUET):
        return "parquet"
    if lower.endswith(ARROW):
        return "arrow"
    with open(path, "rb") as f:
        head = f.read(4096).lstrip()
    return "json" if head.startswith(b"[") else "jsonl"


# -- chunks: a slice of one file that one worker reads --------------------------------------------------------
@dataclass(frozen=True)
class Chunk:
    path: str
    fmt: str
    start: int        # jsonl: byte offset; other formats: first row (0-based)
    stop: int         # jsonl: byte offset; other formats: row after the last
    first_line: int   # jsonl: line number of the chunk's first line; other formats: unused


def plan_chunks(path: str, fmt: str, pieces: int) -> List[Chunk]:
    """Split a file into about `pieces` chunks (at least one per CHUNK_BYTES of JSON Lines)."""
    if fmt == "jsonl":
        size = os.path.getsize(path)
        step = max(min(CHUNK_BYTES, size // max(pieces, 1) + 1), 1 << 16)
        chunks, start, line = [], 0, 1
        with open(path, "rb") as f:
            while start < size:
                f.seek(min(start + step, size))
                f.readline()                           # move to the end of the line the cut falls in
                stop = min(f.tell(), size) if start + step < size else size
                f.seek(start)
                lines = f.read(stop - start).count(b"\n")
                chunks.append(Chunk(path, fmt, start, stop, line))
                start, line = stop, line + lines
        return chunks
    total = count_rows(path, fmt)
    if fmt == "parquet":    # row groups are the unit Parquet reads; a group larger than a chunk is one chunk
        import pyarrow.parquet as pq
        meta, chunks, start = pq.ParquetFile(path).metadata, [], 0
        for g in range(meta.num_row_groups):
            rows = meta.row_group(g).num_rows
            chunks.append(Chunk(path, fmt, start, start + rows, g))
            start += rows
        return chunks
    if fmt == "json":       # a JSON array is parsed whole: one chunk
        return [Chunk(path, fmt, 0, total, 0)]
    step = max(1, -(-total // max(pieces, 1)))
    return [Chunk(path, fmt, a, min(a + step, total), 0) for a in range(0, total, step)]


def count_rows(path: str, fmt: str) -> int:
    if fmt == "parquet":
        import pyarrow.parquet as pq
        return _arrow_call(path, lambda: pq.ParquetFile(path).metadata.num_rows)
    if fmt == "arrow":
        return _arrow_call(path, lambda: _arrow_table(path).num_rows)
    if fmt == "json":
        return len(_json_array(path))
    raise ValueError(fmt)


def read_chunk(chunk: Chunk) -> Iterator[Tuple[str, object]]:
    """(where, row dict) for every row of the chunk; a row that is not valid JSON or not an object comes as
    (where, DataError) so the caller decides whether it stops the run or is skipped."""
    path = chunk.path
    if chunk.fmt == "jsonl":
        with open(path, "rb") as f:
            f.seek(chunk.start)
            data = f.read(chunk.stop - chunk.start)
        for number, line in enumerate(data.split(b"\n"), chunk.first_line):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                yield _checked_object(where, json.loads(line))
            except json.JSONDecodeError as exc:
                yield where, DataError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})")
            except UnicodeDecodeError:
                yield where, DataError(f"{where}: the line is not UTF-8 text")
        return
    if chunk.fmt == "json":
        rows = _json_array(path)
    elif chunk.fmt == "parquet":
        import pyarrow.parquet as pq
        rows = _arrow_call(path, lambda: pq.ParquetFile(path).read_row_group(chunk.first_line).to_pylist())
    else:
        rows = _arrow_call(path, lambda: _arrow_table(path).slice(chunk.start, chunk.stop - chunk.start)
                           .to_pylist())
    offset = 0 if chunk.fmt == "json" else chunk.start
    lo, hi = (0, len(rows)) if chunk.fmt != "json" else (chunk.start, chunk.stop)
    for i in range(lo, hi):
        yield _checked_object(f"{path}:row {offset + i + 1}", rows[i])


def _checked_object(where: str, row):
    if isinstance(row, dict):
        return where, row
    return where, DataError(f"{where}: expected a JSON object, got {type(row).__name__}")


def _json_array(path: str) -> list:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a JSON array of rows")
    return rows


def _arrow_table(path: str):
    """An Arrow IPC file or stream (as Hugging Face `datasets` writes), memory-mapped: slicing it is free."""
    import pyarrow as pa

    source = pa.memory_map(path, "r")
    try:
        return pa.ipc.open_file(source).read_all()
    except pa.ArrowInvalid:
        source.seek(0)
        return pa.ipc.open_stream(source).read_all()


def _arrow_call(path: str, read):
    import pyarrow as pa
    try:
        return read()
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable {('Parquet' if path.lower().endswith(PARQUET) else 'Arrow')} "
                        f"file ({str(exc).splitlines()[0][:160]})") from None


# -- rows -----------------------------------------------------------------------------------------------------
def normalize_row(row: dict, where: str, columns: dict) -> dict:
    """Rename mapped columns, then turn ShareGPT `conversations` into mindtune's `messages` (SFT and prompt rows)
    or a `prompt` message list (preference rows, whose chosen/rejected may be ShareGPT turns)."""
    if columns:
        row = dict(row)
        for target, name in columns.items():
            if name in row:
                row[target] = row.pop(name)
    if "conversations" in row and "messages" not in row:
        row = dict(row)
        turns = sharegpt_messages(row.pop("conversations"), where, "conversations")
        if isinstance(row.get("system"), str) and row["system"]:
            turns = [{"role": "system", "content": row.pop("system")}] + turns
        if "chosen" in row or "rejected" in row:
            row["prompt"] = turns
            for side in ("chosen", "rejected"):
                if isinstance(row.get(side), dict):
                    row[side] = sharegpt_messages([row[side]], where, side)
        else:
            row["messages"] = turns
    return row


def sharegpt_messages(turns, where: str, field: str) -> list:
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{where}: {field!r} must be a non-empty list of {{from, value}} objects")
    out = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise DataError(f"{where}: {field}[{i}] needs 'from' and 'value'")
        role = SHAREGPT_ROLES.get(turn["from"])
        if role is None:
            raise DataError(f"{where}: {field}[{i}] is from {turn['from']!r}; expected one of "
                            f"{', '.join(SHAREGPT_ROLES)}")
        out.append({"role": role, "content": turn["value"]})
    return out


def read_source_rows(path: str, key: str, columns: Optional[dict] = None) -> List[Tuple[str, dict]]:
    """Every row of a file of any format, normalised, as [(where, row)]; the first bad row raises."""
    if path is None:
        raise DataError(f"{key} is required")
    if not os.path.isfile(path):
        raise DataError(f"{key}: data file not found: {path}")
    fmt = file_format(path)
    out = []
    for chunk in plan_chunks(path, fmt, 1):
        for where, row in read_chunk(chunk):
            if isinstance(row, DataError):
                raise row
            out.append((where, normalize_row(row, where, columns or {})))
    if not out:
        raise DataError(f"{path}: the file has no rows")
    return out
