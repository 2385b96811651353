"""`mindtune prepare` and `mindtune train` through the real CLI: prepare builds the cache, train reuses it, a
mixture's per-source row counts reach metrics.jsonl, and skip_bad_rows reports what it skipped."""
import json
import os

CONFIG = """\
stage: sft
output_dir: {out}
model: {{path: tiny}}
data:
  train: [{{path: {a}, weight: 3}}, {{path: {b}, weight: 1, name: extra}}]
  max_length: 48
  cache_dir: {cache}
train: {{batch_size: 4, max_steps: 3, graph_mode: false}}
"""


def test_prepare_then_train_reuses_the_cache_and_logs_each_sources_rows(tmp_path, cli, assets):
    rows = open(os.path.join(assets, "demo_sft_train.jsonl")).read().splitlines()
    (tmp_path / "a.jsonl").write_text("\n".join(rows[:100]) + "\n")
    (tmp_path / "b.jsonl").write_text("\n".join(rows[100:]) + "\n")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(CONFIG.format(out=tmp_path / "run", a=tmp_path / "a.jsonl", b=tmp_path / "b.jsonl",
                                 cache=tmp_path / "cache"))
    code, out, err = cli("prepare", cfg)
    assert code == 0, err
    assert out.count("built in") == 2 and "a.jsonl: 100 rows cached" in out and "b.jsonl: 67 rows cached" in out
    code, out, err = cli("train", cfg)
    assert code == 0, err
    assert out.count("reused") == 2 and "built in" not in out       # training did not tokenize again
    logged = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [r["step"] for r in logged] == [1, 2, 3]
    for r in logged:   # every row of the step's global batch is counted against its source
        assert r["rows_a"] + r["rows_extra"] == 4 * r["step"]
    assert logged[-1]["rows_a"] > logged[-1]["rows_extra"]


def test_skip_bad_rows_reports_the_count_and_first_locations(tmp_path, cli, assets):
    good = open(os.path.join(assets, "demo_sft_train.jsonl")).read().splitlines()[:20]
    bad = good[:3] + ['{"instruction": "x"}'] + good[3:10] + ["not json"] + good[10:]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(bad) + "\n")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"stage: sft\noutput_dir: {tmp_path / 'run'}\nmodel: {{path: tiny}}\n"
                   f"data: {{train: {path}, max_length: 48, cache_dir: {tmp_path / 'cache'}}}\n")
    code, out, err = cli("prepare", cfg)
    assert code == 2 and err.strip() == f"mindtune prepare: error: {path}:4: missing field 'output'"
    code, out, err = cli("prepare", cfg, "data.skip_bad_rows=true")
    assert code == 0, err
    assert "20 rows cached (0 dropped as too long, 2 bad rows skipped)" in out
    assert f"bad rows (first 2): {path}:4: missing field 'output'; {path}:12: invalid JSON" in out
