"""The tokenized-data cache: each data file is rendered and tokenized once into flat arrays that every later run
and every msrun rank reads memory-mapped.

One entry per (file contents, tokenizer, chat template, encoding settings, row kind) under `data.cache_dir`:

    <kind>-<file stem>-<key>/meta.json          what the entry holds: rows, dropped, bad rows, fields, key inputs
                             <field>.bin        every row's values of a field, concatenated (raw little-endian)
                             <field>.offsets.bin  int64 [rows + 1]: where each row's sequence starts
                             ordinal.bin, line.bin  the row's index among the file's rows, its line / row number

The key is a SHA-256 of everything that decides the content, so a changed input gets a new entry and a stale one
is never read. Building happens in a temporary directory renamed into place when complete (a killed build leaves
nothing a reader would open), under a file lock (the first process builds, the others wait and reuse).
Rows are encoded by `data.num_workers` processes, one file chunk each at a time, in file order.
"""
import fcntl
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional

import numpy as np

from mindtune.data.encoders import SCHEMA, Encoding, encode_row
from mindtune.data.sources import Source, file_format, normalize_row, plan_chunks, read_chunk
from mindtune.engine.faults import maybe_kill
from mindtune.errors import DataError

VERSION = 1
BAD_EXAMPLES = 5          # locations kept for the report of skipped rows
INLINE_BYTES = 4 << 20    # auto workers: files smaller than this are encoded in the calling process


def default_cache_dir() -> str:
    """MINDTUNE_CACHE_DIR, else $XDG_CACHE_HOME/mindtune, else ~/.cache/mindtune (as `datasets` keeps its own)."""
    if os.environ.get("MINDTUNE_CACHE_DIR"):
        return os.environ["MINDTUNE_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mindtune")


_DIGESTS = {}


def file_digest(path: str) -> str:
    """SHA-256 of a file's contents (remembered per process while its size and mtime stay the same)."""
    st = os.stat(path)
    memo = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if memo not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[memo] = digest.hexdigest()
    return _DIGESTS[memo]


def tokenizer_identity(tokenizer) -> dict:
    return {"file": file_digest(tokenizer.path) if tokenizer.path and os.path.isfile(tokenizer.path) else None,
            "kind": tokenizer.kind, "bos": tokenizer.bos_token, "eos": tokenizer.eos_token,
            "pad": tokenizer.pad_token, "add_bos": tokenizer.add_bos, "chat_template": tokenizer.chat_template}


def cache_key(source: Source, tokenizer, encoding: Encoding, skip_bad_rows: bool) -> dict:
    """Everything that decides an entry's content (the file by its contents, not its name or date)."""
    return {"version": VERSION, "data": file_digest(source.path), "format": file_format(source.path),
            "columns": dict(sorted(source.columns.items())), "tokenizer": tokenizer_identity(tokenizer),
            "encoding": encoding.settings(), "skip_bad_rows": bool(skip_bad_rows)}


@dataclass
class Entry:
    directory: str
    meta: dict
    built: bool          # this process built it (False: reused, or built by another process while we waited)


def entry_name(source: Source, encoding: Encoding, key: dict) -> str:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in source.label)[:40]
    return f"{encoding.kind}-{stem}-{digest}"


def ensure_cache(source: Source, tokenizer, encoding: Encoding, cache_dir: Optional[str] = None,
                 num_workers: int = 0, skip_bad_rows: bool = False, progress: bool = True) -> Entry:
    """The cache entry of `source`, built now if no complete one exists (one builder; the others wait)."""
    if not os.path.isfile(source.path):
        raise DataError(f"{source.key}: data file not found: {source.path}")
    cache_dir = cache_dir or default_cache_dir()
    key = cache_key(source, tokenizer, encoding, skip_bad_rows)
    name = entry_name(source, encoding, key)
    final = os.path.join(cache_dir, name)
    if os.path.isfile(os.path.join(final, "meta.json")):
        return Entry(final, read_meta(final), False)
    os.makedirs(cache_dir, exist_ok=True)
    with locked(os.path.join(cache_dir, name + ".lock")):
        if os.path.isfile(os.path.join(final, "meta.json")):     # another process built it while we waited
            return Entry(final, read_meta(final), False)
        for stale in os.listdir(cache_dir):                    # a killed builder's leftovers (we hold the lock)
            if stale.startswith(f".building-{name}-"):
                shutil.rmtree(os.path.join(cache_dir, stale), ignore_errors=True)
        tmp = tempfile.mkdtemp(prefix=f".building-{name}-", dir=cache_dir)
        try:
            meta = _build(tmp, source, tokenizer, encoding, num_workers, skip_bad_rows, progress)
            meta["key"] = key
            _write_json(os.path.join(tmp, "meta.json"), meta)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return Entry(final, meta, True)


def read_meta(directory: str) -> dict:
    with open(os.path.join(directory, "meta.json"), encoding="utf-8") as f:
        return json.load(f)


@contextmanager
def locked(path: str):
    """An exclusive lock on `path` (created if missing) for the body of the with-statement; shared by processes."""
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _write_json(path: str, value):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1)


# -- building ---------------------------------------------------------------------------------------------------
def resolve_workers(num_workers: int, path: str, chunks: int) -> int:
    """data.num_workers: 0 = auto (the calling process for small files, else one per core up to 8)."""
    if num_workers == 0:
        num_workers = 1 if os.path.getsize(path) < INLINE_BYTES else min(8, os.cpu_count() or 1)
    return max(1, min(num_workers, chunks))


def _build(tmp, source, tokenizer, encoding, num_workers, skip_bad_rows, progress) -> dict:
    from tqdm import tqdm

    began = time.perf_counter()
    fmt = file_format(source.path)
    chunks = plan_chunks(source.path, fmt, 4 * max(num_workers, os.cpu_count() or 1))
    workers = resolve_workers(num_workers, source.path, len(chunks))
    settings = (tokenizer, encoding, source.columns, source.key, skip_bad_rows)
    writer = _Writer(tmp, SCHEMA[encoding.kind])
    read = dropped = bad = 0
    examples = []
    bar = tqdm(desc=f"prepare {source.key} ({source.label})", unit=" rows", dynamic_ncols=True, file=sys.stderr,
               disable=not progress or os.environ.get("MINDTUNE_NO_PROGRESS") == "1")
    with _pool(workers, settings) as imap:
        for i, part in enumerate(imap(_encode_chunk, chunks)):
            if part["error"] is not None:
                raise DataError(part["error"])
            writer.append(part["fields"], part["ordinal"] + read, part["line"])
            read, dropped, bad = read + part["read"], dropped + part["dropped"], bad + part["bad"]
            examples += part["examples"][:BAD_EXAMPLES - len(examples)]
            bar.update(part["read"])
            maybe_kill("cache_build", i + 1)
    bar.close()
    rows = writer.close()
    if read == 0 and bad == 0:
        raise DataError(f"{source.path}: the file has no rows")
    if rows == 0:
        if bad and not dropped:
            raise DataError(f"{source.path}: all {bad} rows are bad (data.skip_bad_rows); first: {examples[0]}")
        what = "preference pair fits" if encoding.kind == "preference" else "row fits"
        tail = " with a response token left" if encoding.kind == "sft" else ""
        raise DataError(f"{source.path}: no {what} data.max_length={encoding.max_length}{tail}")
    return {"version": VERSION, "kind": encoding.kind, "source": os.path.abspath(source.path), "format": fmt,
            "where": "line" if fmt == "jsonl" else "row", "rows": rows, "read": read, "dropped": dropped,
            "bad_rows": bad, "bad_examples": examples, "fields": writer.fields, "workers": workers,
            "seconds": round(time.perf_counter() - began, 3)}


@contextmanager
def _pool(workers: int, settings):
    """imap over chunks in file order: in this process (one worker) or in spawned worker processes (spawn, not
    fork: the caller may already hold MindSpore's threads)."""
    if workers == 1:
        _init(*settings)
        yield lambda fn, items: map(fn, items)
        return
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, initializer=_init, initargs=settings) as pool:
        yield lambda fn, items: pool.imap(fn, items)


_WORKER = {}


def _init(tokenizer, encoding, columns, key, skip_bad_rows):
    _WORKER.update(tokenizer=tokenizer, encoding=encoding, columns=columns, key=key, skip=skip_bad_rows)


def _encode_chunk(chunk) -> dict:
    """Encode one chunk: its fields as flat arrays, row counts, and the first error (or, skipping, the count and
    first locations of bad rows)."""
    w = _WORKER
    schema = SCHEMA[w["encoding"].kind]
    values = {name: [] for name in schema}
    ordinals, lines, examples = [], [], []
    read = dropped = bad = 0
    for where, row in read_chunk(chunk):
        read += 1
        try:
            if isinstance(row, DataError):
                raise row
            encoded = encode_row(w["tokenizer"], w["encoding"], normalize_row(row, where, w["columns"]), where,
                                 w["key"])
        except DataError as exc:
            if not w["skip"]:
                return {"error": str(exc)}
            bad += 1
            if len(examples) < BAD_EXAMPLES:
                examples.append(str(exc))
            continue
        if encoded is None:
            dropped += 1
            continue
        for name in schema:
            values[name].append(encoded[name])
        ordinals.append(read - 1)
        lines.append(int(where.rsplit(":", 1)[1].replace("row ", "")))
    fields = {}
    for name, (shape, dtype) in schema.items():
        if shape == "value":
            fields[name] = np.asarray(values[name], dtype)
        else:
            seqs = [np.frombuffer(v, np.uint8) if isinstance(v, bytes) else np.asarray(v, dtype)
                    for v in values[name]]
            fields[name] = (np.concatenate(seqs).astype(dtype) if seqs else np.zeros(0, dtype),
                            np.array([len(s) for s in seqs], np.int64))
    return {"error": None, "fields": fields, "ordinal": np.asarray(ordinals, np.int64),
            "line": np.asarray(lines, np.int64), "read": read, "dropped": dropped, "bad": bad,
            "examples": examples}


class _Writer:
    """Appends each chunk's arrays to raw files (plain writes, not a writable memory map, so the builder's
    resident memory stays at one chunk)."""

    def __init__(self, directory: str, schema: dict):
        self.directory, self.schema, self.files, self.fields, self.ends = directory, schema, {}, {}, {}
        for name, (shape, dtype) in list(schema.items()) + [("ordinal", ("value", "int64")),
                                                             ("line", ("value", "int64"))]:
            self._open(name, dtype)
            if shape == "seq":
                self._open(name + ".offsets", "int64")
                self.ends[name] = 0
                self._write(name + ".offsets", np.zeros(1, np.int64))
        self.rows = 0

    def _open(self, name, dtype):
        self.files[name] = open(os.path.join(self.directory, name + ".bin"), "wb")
        self.fields[name] = {"dtype": dtype, "count": 0}

    def _write(self, name, array):
        array = np.ascontiguousarray(array, dtype=self.fields[name]["dtype"])
        self.files[name].write(array.tobytes())
        self.fields[name]["count"] += int(array.size)

    def append(self, fields: dict, ordinal, line):
        for name, (shape, _) in self.schema.items():
            if shape == "value":
                self._write(name, fields[name])
            else:
                flat, lengths = fields[name]
                self._write(name, flat)
                self._write(name + ".offsets", self.ends[name] + np.cumsum(lengths))
                self.ends[name] += int(lengths.sum())
        self._write("ordinal", ordinal)
        self._write("line", line)
        self.rows += len(ordinal)

    def close(self) -> int:
        for f in self.files.values():
            f.flush()
            os.fsync(f.fileno())
            f.close()
        return self.rows


# -- reading ----------------------------------------------------------------------------------------------------
class CacheView:
    """A cache entry opened memory-mapped: `view.seq("tokens", i)`, `view.array("margin")`, `view.lengths(...)`.
    Nothing is read until a row is asked for; the pages read are the file's, shared by every rank."""

    def __init__(self, directory: str, meta: Optional[dict] = None):
        self.directory = directory
        self.meta = meta or read_meta(directory)
        self._arrays = {}

    def __len__(self):
        return self.meta["rows"]

    def array(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            spec = self.meta["fields"][name]
            if spec["count"] == 0:
                self._arrays[name] = np.zeros(0, spec["dtype"])
            else:
                self._arrays[name] = np.memmap(os.path.join(self.directory, name + ".bin"), dtype=spec["dtype"],
                                               mode="r", shape=(spec["count"],))
        return self._arrays[name]

    def seq(self, name: str, i: int) -> np.ndarray:
        offsets = self.array(name + ".offsets")
        return self.array(name)[offsets[i]:offsets[i + 1]]

    def lengths(self, name: str) -> np.ndarray:
        return np.diff(self.array(name + ".offsets")).astype(np.int32)

    def where(self, i: int) -> str:
        line = int(self.array("line")[i])
        return f"{self.meta['source']}:{line}" if self.meta["where"] == "line" else \
            f"{self.meta['source']}:row {line}"
