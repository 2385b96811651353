"""Input formats: ShareGPT rows, Parquet and Arrow files and renamed columns encode to the same tokens as the
equivalent JSON Lines rows, for every kind of row; bad rows in them are named by file:row N."""
import json
import os
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mindtune.data.loading import open_set
from mindtune.data.sources import Source
from mindtune.data.tokenizer import load_tokenizer
from mindtune.errors import DataError

ASSETS = os.path.join(os.path.dirname(__file__), "..", "..", "mindtune", "assets")
TOK = load_tokenizer(os.path.join(ASSETS, "tiny_tokenizer"))

SFT_ROWS = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"say {i}"},
                          {"role": "assistant", "content": f"{i} {i}"}, {"role": "user", "content": "again"},
                          {"role": "assistant", "content": f"{i}"}]} for i in range(12)]
SHAREGPT = {"system": "system", "user": "human", "assistant": "gpt"}


def data_cfg(tmp, **over):
    return SimpleNamespace(**{"truncation": "keep_response", "train_on_prompt": False, "cache_dir": str(tmp / "c"),
                              "num_workers": 1, "skip_bad_rows": False, **over})


def jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def parquet(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), str(path), row_group_size=5)   # several row groups: several chunks
    return str(path)


def arrow(path, rows, stream=False):
    table = pa.Table.from_pylist(rows)
    with pa.OSFile(str(path), "wb") as sink:
        writer = (pa.ipc.new_stream if stream else pa.ipc.new_file)(sink, table.schema)  # stream: what `datasets` writes
        writer.write_table(table)
        writer.close()
    return str(path)


def sharegpt(row):
    return {"conversations": [{"from": SHAREGPT[m["role"]], "value": m["content"]} for m in row["messages"]]}


def encoded(kind, source, tmp, max_length=64):
    data = open_set(kind, [source], TOK, 0, max_length, data_cfg(tmp))
    idx = np.arange(len(data))
    if kind == "sft":
        return [a.tolist() for a in data.batch(idx)]
    if kind == "preference":
        return [data.chosen[idx].tolist(), data.rejected[idx].tolist(), data.chosen_labels[idx].tolist(),
                data.margin.tolist()]
    return list(data)


def test_sft_rows_in_every_format_encode_to_the_json_lines_tokens(tmp_path):
    want = encoded("sft", Source(jsonl(tmp_path / "a.jsonl", SFT_ROWS)), tmp_path)
    assert len(want[0]) == 12 and any(v != -100 for v in want[1][0])
    shared = [sharegpt(r) for r in SFT_ROWS]
    renamed = [{"dialog": r["messages"]} for r in SFT_ROWS]
    alpaca = [{"instruction": f"q{i}", "input": "ctx" if i % 2 else "", "output": f"a{i}"} for i in range(12)]
    cases = {
        "sharegpt jsonl": Source(jsonl(tmp_path / "s.jsonl", shared)),
        "parquet": Source(parquet(tmp_path / "a.parquet", SFT_ROWS)),
        "sharegpt parquet": Source(parquet(tmp_path / "s.parquet", shared)),
        "arrow file": Source(arrow(tmp_path / "a.arrow", SFT_ROWS)),
        "arrow stream": Source(arrow(tmp_path / "s.arrow", shared, stream=True)),
        "json array": Source(str(tmp_path / "a.json")),
        "column mapping": Source(jsonl(tmp_path / "r.jsonl", renamed), columns={"messages": "dialog"}),
    }
    (tmp_path / "a.json").write_text(json.dumps(SFT_ROWS))
    for what, source in cases.items():
        assert encoded("sft", source, tmp_path) == want, what
    # alpaca fields renamed in a Parquet file
    want = encoded("sft", Source(jsonl(tmp_path / "alpaca.jsonl", alpaca)), tmp_path)
    renamed = [{"question": r["instruction"], "context": r["input"], "answer": r["output"]} for r in alpaca]
    mapping = {"instruction": "question", "input": "context", "output": "answer"}
    assert encoded("sft", Source(parquet(tmp_path / "q.parquet", renamed), columns=mapping), tmp_path) == want


def test_preference_and_prompt_rows_in_sharegpt_and_parquet(tmp_path):
    pairs = [{"prompt": [{"role": "user", "content": f"pick {i}"}], "chosen": f"yes {i}", "rejected": "no",
              "margin": 0.5 * i} for i in range(8)]
    want = encoded("preference", Source(jsonl(tmp_path / "p.jsonl", pairs)), tmp_path)
    # LLaMA-Factory's ShareGPT preference rows: the conversation, then chosen/rejected as {from, value} turns
    shared = [{"conversations": [{"from": "human", "value": f"pick {i}"}], "chosen": {"from": "gpt", "value": f"yes {i}"},
               "rejected": {"from": "gpt", "value": "no"}, "margin": 0.5 * i} for i in range(8)]
    assert encoded("preference", Source(jsonl(tmp_path / "ps.jsonl", shared)), tmp_path) == want
    flat = [{"prompt": f"pick {i}", "chosen": f"yes {i}", "rejected": "no", "margin": 0.5 * i} for i in range(8)]
    assert encoded("preference", Source(parquet(tmp_path / "p.parquet", flat)), tmp_path) == want
    prompts = [{"prompt": f"tell me about {i}"} for i in range(8)]
    want = encoded("prompt", Source(jsonl(tmp_path / "q.jsonl", prompts)), tmp_path)
    shared = [{"conversations": [{"from": "human", "value": r["prompt"]}]} for r in prompts]
    assert encoded("prompt", Source(arrow(tmp_path / "q.arrow", shared)), tmp_path) == want


def test_bad_rows_in_columnar_files_are_named_by_row(tmp_path):
    rows = [sharegpt(r) for r in SFT_ROWS[:6]]
    rows[4] = {"conversations": [{"from": "robot", "value": "beep"}]}
    path = parquet(tmp_path / "bad.parquet", rows)
    with pytest.raises(DataError, match=f"^{path}:row 5: conversations\\[0\\] is from 'robot'; expected one of "):
        open_set("sft", [Source(path)], TOK, 0, 64, data_cfg(tmp_path))
    data = open_set("sft", [Source(path)], TOK, 0, 64, data_cfg(tmp_path, skip_bad_rows=True))
    meta = data.parts[0].view.meta
    assert len(data) == 5 and meta["bad_rows"] == 1 and meta["bad_examples"][0].startswith(f"{path}:row 5:")
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="junk.parquet: not a readable Parquet file"):
        open_set("sft", [Source(str(tmp_path / "junk.parquet"))], TOK, 0, 64, data_cfg(tmp_path))
