"""The model built under a plan carries the planned shard strategies: read back from the operators of
MindFormers' Llama on CPU, without compiling (semi-auto parallel does not compile on CPU)."""
import json
import os
import subprocess
import sys

import pytest

from mindtune.config.schema import ParallelConfig
from mindtune.parallel.context import context_settings, parallel_mode

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

PLANS = [
    dict(data_parallel=2, model_parallel=4, use_seq_parallel=True, recompute="full", optimizer_shard=True),
    dict(data_parallel=2, model_parallel=4, vocab_emb_dp=False),
    dict(data_parallel=2, model_parallel=1, pipeline_stage=4, micro_batch_num=4),
]


def tup(x):
    return json.loads(json.dumps(x)) if x is not None else None


@pytest.fixture(scope="module")
def readback(tmp_path_factory):
    env = dict(os.environ, PYTHONPATH=ROOT, TMPDIR=str(tmp_path_factory.mktemp("mf")))
    proc = subprocess.run([sys.executable, os.path.join(HERE, "readback_worker.py"), json.dumps(PLANS)],
                          capture_output=True, text=True, env=env, cwd=str(tmp_path_factory.mktemp("cwd")),
                          timeout=300)
    line = [l for l in proc.stdout.splitlines() if l.startswith("READBACK ")]
    assert proc.returncode == 0 and line, proc.stderr[-3000:]
    return json.loads(line[0][len("READBACK "):])


def test_tensor_parallel_strategies(readback):
    r = readback[0]   # dp2 x mp4, sequence parallel, full recompute, optimizer sharding
    assert r["context"] == {"parallel_mode": "semi_auto_parallel", "pipeline_stages": 1,
                            "enable_parallel_optimizer": True, "full_batch": True}
    # column-parallel q/k/w1: activations split by dp, weight rows by mp
    assert r["wq"]["in_strategy"] == [[2, 1], [4, 1]]
    assert r["wk"]["in_strategy"] == [[2, 1], [4, 1]]
    assert r["w1"]["in_strategy"] == [[2, 1], [4, 1]]
    # row-parallel o/w2: the reduction dimension split by mp; sequence parallel reduce-scatters the output
    assert r["wo"]["in_strategy"] == [[2, 4], [1, 4]]
    assert r["wo"]["out_strategy"] == [[8, 1]]
    assert r["w2"]["out_strategy"] == [[8, 1]]
    assert all(r["recomputed"])


def test_without_sequence_parallel_output_is_all_reduced(readback):
    r = readback[1]
    assert r["wo"]["in_strategy"] == [[2, 4], [1, 4]]
    assert r["wo"]["out_strategy"] == [[2, 1]]
    assert not any(r["recomputed"])
    # vocab_emb_dp false: the embedding table split over mp
    assert r["embedding"]["in_strategy"] == [[4, 1], [2, 1]]


def test_pipeline_stages_and_data_parallel_embedding(readback):
    r = readback[2]   # dp2 x pp4
    assert r["context"]["pipeline_stages"] == 4 and r["context"]["enable_parallel_optimizer"] is False
    assert r["stages"] == [0, 1, 2, 3]
    assert r["wq"]["in_strategy"] == [[2, 1], [1, 1]]
    assert r["embedding"]["in_strategy"] == [[1, 1], [2, 1]]     # vocab_emb_dp: table whole, batch split


def test_context_settings_choose_the_mode():
    assert parallel_mode(ParallelConfig(), 1) == "stand_alone"
    assert context_settings(ParallelConfig(data_parallel=2), 2) == {
        "parallel_mode": "data_parallel", "device_num": 2, "gradients_mean": True}
    s = context_settings(ParallelConfig(data_parallel=2, optimizer_shard=True), 2)
    assert s["parallel_mode"] == "semi_auto_parallel" and s["enable_parallel_optimizer"] is True
    with pytest.raises(Exception, match="but the job has 4 workers"):
        context_settings(ParallelConfig(data_parallel=8), 4)
