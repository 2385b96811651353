"""The tokenized-data cache: keyed by everything that decides its content, reused when nothing changed, built by
one process at a time, never left half-built, and read back to exactly what the in-memory encoders give."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mindtune.data.cache import CacheView, ensure_cache
from mindtune.data.encoders import Encoding
from mindtune.data.packing import PackedSFTSet
from mindtune.data.preference import load_preferences
from mindtune.data.sets import Part, PreferenceSet, PromptSet, SFTSet
from mindtune.data.sft import load_sft
from mindtune.data.sources import Source
from mindtune.data.tokenizer import load_tokenizer

ASSETS = os.path.join(os.path.dirname(__file__), "..", "..", "mindtune", "assets")
TOK = load_tokenizer(os.path.join(ASSETS, "tiny_tokenizer"))
SFT = Encoding("sft", 48, "keep_response", False, 0)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def sft_rows(n, start=0):
    return [{"instruction": f"spell {i} in words please", "output": f"number {i} " * (1 + i % 4)}
            for i in range(start, start + n)]


def open_sft(entry, path, max_length=48):
    return SFTSet([Part(CacheView(entry.directory), path, "x", 1.0)], 0, max_length)


def test_cached_sft_rows_equal_the_in_memory_encoding(tmp_path):
    path = os.path.join(ASSETS, "demo_sft_train.jsonl")
    entry = ensure_cache(Source(path), TOK, SFT, str(tmp_path))
    data = open_sft(entry, path)
    x, y, dropped = load_sft(path, TOK, 48, 0)
    got_x, got_y = data.batch(np.arange(len(data)))
    assert (got_x == x).all() and (got_y == y).all() and data.dropped == dropped
    assert list(data.lengths) == [int((row != 0).sum()) for row in x]
    assert isinstance(CacheView(entry.directory).array("tokens"), np.memmap)   # read memory-mapped
    # the label counts the label budgets are planned from (read from the marks file) are those batch() builds
    assert data.label_counts.tolist() == (got_y != -100).sum(1).tolist() and data.label_counts.min() > 0
    packs = PackedSFTSet(data, 48)
    assert packs.label_counts.tolist() == (packs.batch(np.arange(len(packs)))[1] != -100).sum(1).tolist()


def test_cached_preference_and_prompt_rows_equal_the_in_memory_encoding(tmp_path):
    path = os.path.join(ASSETS, "demo_pref_train.jsonl")
    entry = ensure_cache(Source(path), TOK, Encoding("preference", 40, "keep_response", False, 0), str(tmp_path))
    cached = PreferenceSet([Part(CacheView(entry.directory), path, "p", 1.0)], 0, 40)
    ref = load_preferences(path, TOK, 40, 0)
    idx = np.arange(len(ref))
    for name in ("chosen", "rejected", "chosen_labels", "rejected_labels"):
        assert (getattr(cached, name)[idx] == getattr(ref, name)).all(), name
    assert (cached.chosen_last == ref.chosen_last).all() and (cached.margin == ref.margin).all()
    prompts = os.path.join(ASSETS, "ppo_keyword_prompts.jsonl")
    entry = ensure_cache(Source(prompts), TOK, Encoding("prompt", 40, pad_id=0), str(tmp_path))
    cached = PromptSet([Part(CacheView(entry.directory), prompts, "p", 1.0)], 0, 40)
    from mindtune.data.formats import read_rows
    from mindtune.rlhf.rollout import encode_prompts
    rows = read_rows(prompts)
    assert list(cached) == encode_prompts(rows, TOK, 40, 0)
    assert cached.rows[3] == rows[3]    # GRPO's rewards get the row and its file:line


def test_every_input_that_decides_the_content_gets_its_own_entry(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", sft_rows(20))
    cache = str(tmp_path / "cache")
    first = ensure_cache(Source(path), TOK, SFT, cache)
    assert first.built
    again = ensure_cache(Source(path), TOK, SFT, cache)
    assert not again.built and again.directory == first.directory    # identical key: reused, not rebuilt

    template = TOK.chat_template.replace("'\n' + message['content']", "': ' + message['content']")
    assert template != TOK.chat_template
    other_template = load_tokenizer(os.path.join(ASSETS, "tiny_tokenizer"), chat_template=template)
    changes = {
        "max_length": (Source(path), TOK, Encoding("sft", 40, "keep_response", False, 0)),
        "truncation": (Source(path), TOK, Encoding("sft", 48, "right", False, 0)),
        "train_on_prompt": (Source(path), TOK, Encoding("sft", 48, "keep_response", True, 0)),
        "pad id": (Source(path), TOK, Encoding("sft", 48, "keep_response", False, TOK.vocab_size - 1)),
        "chat template": (Source(path), other_template, SFT),
        "columns": (Source(path, columns={"output": "answer"}), TOK, SFT),
    }
    seen = {first.directory}
    for what, (source, tok, encoding) in changes.items():
        entry = ensure_cache(source, tok, encoding, cache)
        assert entry.built and entry.directory not in seen, what
        seen.add(entry.directory)
    # the data file's contents (not its name or date): an edited file is rebuilt and read anew
    write_jsonl(tmp_path / "a.jsonl", sft_rows(20, start=100))
    edited = ensure_cache(Source(path), TOK, SFT, cache)
    assert edited.built and edited.directory not in seen
    assert (open_sft(edited, path).batch([0])[0] == load_sft(path, TOK, 48, 0)[0][:1]).all()
    # a different tokenizer file with the same name and settings
    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    for name in ("tokenizer.json", "tokenizer_meta.json"):
        (tok_dir / name).write_bytes(open(os.path.join(ASSETS, "tiny_tokenizer", name), "rb").read())
    same = ensure_cache(Source(path), load_tokenizer(str(tok_dir)), SFT, cache)
    assert not same.built    # same contents: the same entry
    vocab = json.loads((tok_dir / "tokenizer.json").read_text())
    vocab["model"]["vocab"]["zz_new"] = max(vocab["model"]["vocab"].values()) + 1
    (tok_dir / "tokenizer.json").write_text(json.dumps(vocab))
    assert ensure_cache(Source(path), load_tokenizer(str(tok_dir)), SFT, cache).built


BUILD = """
import json, os, sys
from mindtune.data.cache import ensure_cache
from mindtune.data.encoders import Encoding
from mindtune.data.sources import Source
from mindtune.data.tokenizer import load_tokenizer
path, cache, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
entry = ensure_cache(Source(path), load_tokenizer({tok!r}), Encoding("sft", 48, "keep_response", False, 0), cache,
                     num_workers=workers)
print(json.dumps({{"built": entry.built, "dir": entry.directory, "workers": entry.meta["workers"]}}))
""".format(tok=os.path.join(ASSETS, "tiny_tokenizer"))


def build_in_subprocess(path, cache, workers=1, env=None):
    return subprocess.Popen([sys.executable, "-c", BUILD, path, cache, str(workers)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, **(env or {})))


def test_a_killed_build_leaves_no_entry_and_the_next_run_builds_a_whole_one(tmp_path):
    path = write_jsonl(tmp_path / "big.jsonl", sft_rows(4000))   # ~250 KB: several 64 KB chunks
    cache = str(tmp_path / "cache")
    proc = build_in_subprocess(path, cache, env={"MINDTUNE_KILL_AT": "cache_build:2"})
    proc.wait(timeout=120)
    assert proc.returncode == -9                                  # SIGKILL after two chunks were written
    left = os.listdir(cache)
    assert [d for d in left if d.startswith(".building-")]        # the half-built directory is there ...
    assert not [d for d in left if d.startswith("sft-") and not d.endswith(".lock")]   # ... but no entry
    proc = build_in_subprocess(path, cache)
    out, err = proc.communicate(timeout=120)
    result = json.loads(out)
    assert result["built"], err
    assert not [d for d in os.listdir(cache) if d.startswith(".building-")]   # the leftovers are cleaned
    data = open_sft(type("E", (), {"directory": result["dir"]}), path)
    assert len(data) == 4000 and (data.batch(np.arange(3990, 4000))[1] == load_sft(path, TOK, 48, 0)[1][3990:]).all()


def test_only_one_process_builds_while_the_others_wait_and_reuse(tmp_path):
    path = write_jsonl(tmp_path / "big.jsonl", sft_rows(4000))
    cache = str(tmp_path / "cache")
    procs = [build_in_subprocess(path, cache, workers=2) for _ in range(3)]
    results = [json.loads(p.communicate(timeout=180)[0]) for p in procs]
    assert sorted(r["built"] for r in results) == [False, False, True]
    assert len({r["dir"] for r in results}) == 1
    assert max(r["workers"] for r in results) == 2     # the builder used two worker processes
    data = open_sft(type("E", (), {"directory": results[0]["dir"]}), path)
    x, y, _ = load_sft(path, TOK, 48, 0)
    bx, by = data.batch(np.arange(len(data)))
    assert (bx == x).all() and (by == y).all()         # worker chunks come back in file order


def test_skip_bad_rows_counts_them_and_reports_the_first_locations(tmp_path):
    rows = [json.dumps(r) for r in sft_rows(10)]
    rows[2] = '{"instruction": "a", "output": '           # invalid JSON
    rows[5] = json.dumps({"instruction": "only"})          # missing output
    rows[7] = "[1, 2]"                                     # not an object
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(rows) + "\n")
    from mindtune.errors import DataError
    with pytest.raises(DataError, match=f"^{path}:3: invalid JSON"):    # the default: stop at the first
        ensure_cache(Source(str(path)), TOK, SFT, str(tmp_path / "c"))
    assert not [d for d in os.listdir(tmp_path / "c") if not d.endswith(".lock")]
    entry = ensure_cache(Source(str(path)), TOK, SFT, str(tmp_path / "c"), skip_bad_rows=True)
    assert entry.meta["rows"] == 7 and entry.meta["bad_rows"] == 3
    assert entry.meta["bad_examples"] == [f"{path}:3: invalid JSON (Expecting value at column 32)",
                                          f"{path}:6: missing field 'output'",
                                          f"{path}:8: expected a JSON object, got list"]
    from mindtune.data.loading import report
    text = report(Source(str(path)), entry)
    assert "7 rows cached" in text and "3 bad rows skipped" in text and f"{path}:6: missing field 'output'" in text
