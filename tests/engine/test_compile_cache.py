"""The graph compile cache: a later run loads what an earlier one compiled, and never a graph compiled for other
shapes, another order of compiles or another configuration. Each run is its own process, as MindSpore numbers a
process's cached compiles from 0."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ASSETS, REPO

# Compiles `sum(x @ w)` for each row count in argv[2] (in that order) through the engine's CompiledFunction and
# compile cache; prints, per compile, whether it was loaded from the cache and whether the answer is right.
# argv[3] == "twice": a cell of another class (same parameters, same config) computing twice that.
SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import mindspore as ms
    from mindspore import nn, ops
    from mindtune.engine.compile_cache import CompileCache
    from mindtune.engine.graph import CompiledFunction

    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")

    class Net(nn.Cell):
        def __init__(self):
            super().__init__()
            self.w = ms.Parameter(ms.Tensor(np.full((4, 4), 2.0, np.float32)), name="w")

        def construct(self, x):
            return ops.matmul(x, self.w).sum()

    class Twice(Net):
        def construct(self, x):
            return ops.matmul(x, self.w).sum() * 2

    twice = sys.argv[3:] == ["twice"]
    net = Twice() if twice else Net()

    def total(x):
        return net(x)

    graph = CompiledFunction(total, [net], cache=CompileCache(sys.argv[1], "key"), label="sum")
    for rows in map(int, sys.argv[2].split(",")):
        x = ms.Tensor(np.ones((rows, 4), np.float32))
        cached = graph.cached((x,))
        expected = rows * 4 * 8.0 * (2 if twice else 1)
        print(json.dumps({"rows": rows, "cached": cached, "value": float(graph(x)), "expected": expected}))
""")


def _compile_in_process(cache_dir, rows, *extra):
    script = cache_dir / "compile_sum.py"    # a file: MindSpore's cache hashes the entry script
    script.write_text(SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(cache_dir), ",".join(map(str, rows)), *extra],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_a_graph_is_loaded_only_for_its_own_shapes(tmp_path):
    """MindSpore alone loads graph N for a process's N-th compile whatever its shapes (a 2-row graph answered for 3
    rows); the manifest lets through only the graph compiled for the same signature."""
    runs = [_compile_in_process(tmp_path, rows) for rows in ([2, 3], [3, 2], [3, 2], [2, 7])]
    for run in runs:
        for r in run:
            assert r["value"] == r["expected"], (runs, r)
    assert [r["cached"] for r in runs[0]] == [False, False]      # an empty cache
    assert [r["cached"] for r in runs[1]] == [False, False]      # same graphs, other order: never loaded
    assert [r["cached"] for r in runs[2]] == [True, True]        # same order as the run before: both loaded
    assert [r["cached"] for r in runs[3]] == [False, False]


def test_a_graph_is_not_loaded_for_cells_of_another_class(tmp_path):
    """One config, one entry script, another cell class picked by a command-line argument (what
    bench/diagnose_train.py's variants do): its own graph, never the other's."""
    runs = [_compile_in_process(tmp_path, [2], *extra) for extra in ((), ("twice",), ("twice",))]
    assert [r["value"] for run in runs for r in run] == [64.0, 128.0, 128.0]
    assert [r["cached"] for run in runs for r in run] == [False, False, True]


def test_the_key_ignores_host_only_settings_and_follows_the_graphs():
    from mindtune.config import load_config
    from mindtune.engine.compile_cache import graph_key

    base = ["model.path=tiny", "peft.method=lora"]
    key = graph_key(load_config(None, base))
    for host_only in ("train.lr=0.5", "train.max_steps=7", "data.max_length=96", "train.eval_every=3",
                      "output_dir=elsewhere", "train.compile_cache=false"):
        assert graph_key(load_config(None, base + [host_only])) == key, host_only
    for in_graph in ("peft.rank=4", "peft.alpha=3", "train.max_grad_norm=0", "seed=3", "train.precision=fp16"):
        assert graph_key(load_config(None, base + [in_graph])) != key, in_graph


def test_the_key_follows_the_entry_script(monkeypatch, tmp_path):
    """MindSpore recompiles when the entry script differs from the one that filled the cache: keyed apart."""
    from mindtune.config import load_config
    from mindtune.engine.compile_cache import graph_key

    config = load_config(None, ["model.path=tiny"])
    script = tmp_path / "train.py"
    script.write_text("print(1)\n")
    monkeypatch.setattr("sys.argv", [str(script)])
    key = graph_key(config)
    script.write_text("print(2)\n")
    assert graph_key(config) != key


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, cli):
    """The tiny LoRA SFT (two bucket lengths, an evaluation) run twice against one empty compile cache."""
    cache = tmp_path_factory.mktemp("cache")
    runs = []
    for name in ("first", "second"):
        out = tmp_path_factory.mktemp(name)
        code, _, err = cli("train", "run_configs/tiny/sft_lora_cpu.yaml", f"output_dir={out}", "train.max_steps=4",
                           "train.eval_every=2", "train.log_every=1", f"data.train={ASSETS}/demo_sft_train.jsonl",
                           f"data.eval={ASSETS}/demo_sft_eval.jsonl", env={"MINDTUNE_CACHE_DIR": str(cache)})
        assert code == 0, err[-2000:]
        with open(out / "metrics.jsonl") as fh:
            runs.append(([json.loads(line) for line in fh], err))
    return cache, runs


def test_a_second_run_loads_its_graphs_and_trains_the_same(two_runs):
    cache, ((first, first_err), (second, second_err)) = two_runs
    keys = ("step", "loss", "grad_norm", "eval_loss")
    assert [[r.get(k) for k in keys] for r in second] == [[r.get(k) for k in keys] for r in first]
    assert "compiling the training step for batches of 8x" in first_err
    assert "loading the training step for batches of 8x" not in first_err
    assert "loading the training step for batches of 8x" in second_err
    assert "compiling the training step" not in second_err
    (key_dir,) = os.listdir(cache / "graphs")
    with open(cache / "graphs" / key_dir / "rank_0" / "mindtune_manifest.json") as fh:
        manifest = json.load(fh)
    graphs = os.listdir(cache / "graphs" / key_dir / "rank_0" / "graph_cache")
    assert sorted(f"compile_cache_{i}.mindir" for i in manifest) == sorted(g for g in graphs if g.endswith(".mindir"))


def test_prune_keeps_the_most_recent_and_anything_in_use(tmp_path):
    from mindtune.engine.compile_cache import prune

    for i in range(5):
        (tmp_path / f"k{i}").mkdir()
        os.utime(tmp_path / f"k{i}", (1000.0 * i, 1000.0 * i))      # k4 the most recent; all long idle
    prune(str(tmp_path), keep=2)
    assert sorted(os.listdir(tmp_path)) == ["k3", "k4"]
    (tmp_path / "in_use_a").mkdir()                                    # both used just now
    (tmp_path / "in_use_b").mkdir()
    prune(str(tmp_path), keep=1)
    assert sorted(os.listdir(tmp_path)) == ["in_use_a", "in_use_b"]


def test_a_stale_graph_is_deleted_whatever_prefix_mindspore_gives_it(tmp_path):
    """Under msrun MindSpore names the files MS_WORKERcompile_cache_<n>.mindir: the manifest check must see them."""
    from mindtune.engine import compile_cache

    cache = compile_cache.CompileCache(str(tmp_path), "key")
    graphs = tmp_path / "rank_0" / "graph_cache"
    graphs.mkdir(parents=True)
    index = compile_cache._process["count"]
    stale = graphs / f"MS_WORKERcompile_cache_{index}.mindir"
    stale.write_text("a graph compiled for other shapes")
    with cache.compiling("sum", "signature"):
        assert not stale.exists()
        stale.write_text("what MindSpore writes for this graph")
    with open(tmp_path / "rank_0" / "mindtune_manifest.json") as fh:
        assert json.load(fh)[str(index)] == {"graph": "sum", "signature": "signature"}
