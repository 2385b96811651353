"""stage: rm through the real CLI on a tiny model, then `mindtune score` on the run it leaves behind.

The task (shipped in mindtune/assets/rm_keyword_*.jsonl): the chosen response contains the word "capital", the
rejected one another word at the same place. A random-init 2-layer model learns it with full fine-tuning.
"""
import json
import os

import numpy as np
import pytest

from mindtune.cli import main
from mindtune.engine.metrics import read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "run_configs", "tiny", "rm_cpu.yaml")
ASSETS = os.path.join(REPO, "mindtune", "assets")
TRAIN, EVAL = (os.path.join(ASSETS, f"rm_keyword_{s}.jsonl") for s in ("train", "eval"))


def train(out, *overrides):
    return main(["train", CONFIG, f"output_dir={out}", f"data.train={TRAIN}", f"data.eval={EVAL}", *overrides])


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def score(model, rows, tmp_path, *extra):
    src = write_jsonl(tmp_path / "to_score.jsonl", rows)
    out = tmp_path / "scored.jsonl"
    code = main(["score", "--model", str(model), "--input", src, "--output", str(out), "--batch-size", "6", *extra])
    return code, (read_jsonl(out) if code == 0 else None)


def eval_responses():
    """Every held-out pair as two score rows (chosen first), half of them in messages form."""
    rows = []
    for i, pair in enumerate(read_jsonl(EVAL)):
        for side in ("chosen", "rejected"):
            if i % 2:
                rows.append({"messages": [{"role": "user", "content": pair["prompt"]},
                                          {"role": "assistant", "content": pair[side]}], "side": side})
            else:
                rows.append({"prompt": pair["prompt"], "response": pair[side], "side": side})
    return rows


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("rm") / "run"
    assert train(out, "train.max_steps=80", "train.eval_every=40", "train.log_every=1") == 0
    return out


def test_tiny_model_learns_the_keyword_preference(full_run):
    meta = json.load(open(full_run / "model" / "mindtune_model.json"))
    stats = meta["reward_model"]
    assert meta["stage"] == "rm" and stats["split"] == "data.eval" and stats["pairs"] == 100
    assert stats["accuracy"] >= 0.95, stats
    assert stats["reward_std"] > 0 and stats["max_length"] == 64
    rows = read_metrics(full_run / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 81))
    for key in ("loss", "accuracy", "reward_margin", "reward_mean", "reward_std"):
        assert key in rows[0]
    assert "eval_accuracy" in rows[39] and "eval_accuracy" in rows[-1]
    assert rows[-1]["eval_accuracy"] >= 0.95 and rows[-1]["eval_reward_margin"] > 0
    first, last = rows[0]["loss"], np.mean([r["loss"] for r in rows[-10:]])
    assert last < 0.2 < first, (first, last)


def test_score_command_reproduces_the_held_out_numbers(full_run, tmp_path):
    stats = json.load(open(full_run / "model" / "mindtune_model.json"))["reward_model"]
    rows = eval_responses()
    for model in (full_run, full_run / "model"):    # a run directory or its model/
        code, scored = score(model, rows, tmp_path, "--normalize")
        assert code == 0
        assert [{k: v for k, v in r.items() if not k.startswith("score")} for r in scored] == rows
    s = np.array([r["score"] for r in scored])
    chosen, rejected = s[0::2], s[1::2]
    assert np.mean(chosen > rejected) == stats["accuracy"]
    assert np.mean(s) == pytest.approx(stats["reward_mean"], abs=1e-4)
    assert np.std(s) == pytest.approx(stats["reward_std"], rel=1e-4)
    z = np.array([r["score_normalized"] for r in scored])
    assert np.mean(z) == pytest.approx(0.0, abs=1e-4) and np.std(z) == pytest.approx(1.0, rel=1e-4)


def test_lora_reward_model_is_an_adapter_that_score_loads(tmp_path):
    out = tmp_path / "lora"
    assert train(out, "peft.method=lora", "peft.rank=8", "train.max_steps=15", "train.lr=1.0e-2",
                 "data.eval_rows=12", "train.log_every=5", "rm.stats_at_start=true") == 0
    meta = json.load(open(out / "model" / "mindtune_model.json"))
    assert meta["format"] == "mindtune-adapter" and meta["base_model"] == "tiny"
    assert meta["reward_model"]["pairs"] == 12
    from mindtune.models.model_dir import read_model_dir
    from mindtune.models.spec import PRESETS
    saved = read_model_dir(str(out / "model")).weights()
    adapter = sorted(k for k in saved if k != "score_head.weight")
    # the head and, for each layer, LoRA's A and B on wq, wk, wv and wo: nothing else, nothing missing
    assert "score_head.weight" in saved and len(adapter) == PRESETS["tiny"].num_layers * 4 * 2, adapter
    assert all("lora" in k for k in adapter) and {k.split(".attention.")[1].split(".")[0] for k in adapter} == \
        {"wq", "wk", "wv", "wo"}
    assert any(np.abs(saved[k]).max() > 0 for k in adapter if "lora_b" in k.lower()), "B stayed zero: not trained"
    # base + adapter + head rebuilt by `score` give the rewards the trained network gave
    code, scored = score(out, eval_responses()[:24], tmp_path)
    assert code == 0
    s = np.array([r["score"] for r in scored])
    assert np.mean(s) == pytest.approx(meta["reward_model"]["reward_mean"], abs=1e-4)
    assert np.std(s) == pytest.approx(meta["reward_model"]["reward_std"], rel=1e-4)

    # the accuracy before training: the same run with lr 0 leaves the initial adapter and head, whose scores on
    # the 12 held-out pairs must give the recorded initial_accuracy
    still = tmp_path / "untrained"
    assert train(still, "peft.method=lora", "peft.rank=8", "train.max_steps=1", "train.lr=0",
                 "data.eval_rows=12", "rm.stats_at_start=true") == 0
    code, scored = score(still, eval_responses()[:24], tmp_path)
    assert code == 0
    s = np.array([r["score"] for r in scored])
    assert meta["reward_model"]["initial_accuracy"] == pytest.approx(np.mean(s[0::2] > s[1::2]))


@pytest.mark.parametrize("row, message", [
    ({"prompt": "q", "rejected": "b"}, "missing field 'chosen'"),
    ({"prompt": "q", "chosen": "same words", "rejected": "same words"}, "identical"),
    ({"prompt": "q", "chosen": "a", "rejected": " "}, "'rejected' has an empty response"),
])
def test_bad_rows_fail_the_cli_with_file_and_line(tmp_path, capsys, row, message):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}, row])
    out = tmp_path / "never"
    assert main(["train", CONFIG, f"output_dir={out}", f"data.train={bad}", f"data.eval={EVAL}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mindtune train: error: ") and f"{bad}:2: " in err and message in err
    assert "\n" not in err
    assert not out.exists()   # rows are checked before the run directory is made
    assert main(["validate", CONFIG, f"data.train={bad}", f"data.eval={EVAL}"]) == 2
    assert f"{bad}:2: " in capsys.readouterr().err


def test_score_errors(full_run, tmp_path, capsys):
    code, _ = score(full_run, [{"prompt": "q", "response": "a"}, {"prompt": "q"}], tmp_path)
    err = capsys.readouterr().err.strip()
    assert code == 2 and f"{tmp_path / 'to_score.jsonl'}:2: missing field 'response'" in err and "\n" not in err
    assert not (tmp_path / "scored.jsonl").exists()
    code, _ = score(os.path.join(ASSETS, "tiny_tokenizer"), [{"prompt": "q", "response": "a"}], tmp_path)
    assert code == 2 and "not a mindtune model directory" in capsys.readouterr().err



def test_score_normalize_without_saved_stats_is_refused(full_run, tmp_path, capsys):
    """--normalize needs the reward mean/std saved at training time; without them it must not use 0 and 1."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(full_run / "model", model)
    meta = json.loads((model / "mindtune_model.json").read_text())
    for key in ("reward_mean", "reward_std"):
        del meta["reward_model"][key]
    (model / "mindtune_model.json").write_text(json.dumps(meta))
    code, _ = score(model, [{"prompt": "q", "response": "a"}], tmp_path, "--normalize")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"mindtune score: error: --normalize: {model}/mindtune_model.json: reward_model "
                                 "has no saved reward_mean/reward_std; drop --normalize"]
    assert not (tmp_path / "scored.jsonl").exists()
