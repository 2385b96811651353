"""Data preparation at scale: mindtune's tokenized cache vs Hugging Face `datasets.map`, in one run.

    flock /tmp/mindtune-bench.lock .venv/bin/python bench/bench_data.py [--rows 200000] [--workers 2]
        [--ref-python /tmp/data-ref-venv/bin/python] [--work /tmp/bench-data] [--no-ref] [--mindrecord-rows 20000]
        [--only prepare,memory,mindrecord] [--code DIR] [--rounds 2]

1. Preparation speed: a synthetic SFT file (--rows alpaca rows, a quarter with a system prompt, half with an
   input; 10-200 words each side) rendered with SmolLM2's chat template and tokenizer (models/smollm2-135m), prompt
   masked, max length 512. mindtune: `mindtune prepare` with data.num_workers=--workers into a fresh cache.
   Reference (bench/ref_datasets_map.py, its own environment): datasets.load_dataset("json") then
   Dataset.map(batched, num_proc=--workers) over a transformers fast tokenizer on the same tokenizer.json and
   template. rows/s = rows / (read + tokenize + write) on both sides, best of --rounds alternating rounds; the
   script checks the tokens agree.
2. Memory: peak RSS (/usr/bin/time %M) of `mindtune train` (tiny model, 2 steps, batch 4 x 256) on all rows vs on
   the first 1,000, both from a prepared cache; and of a first run that prepares its cache itself.
3. Time to first step: the first run's preparation time vs a second run's launch-to-first-step (the line the
   stage prints just before the trainer starts) and its data time alone (opening the cache in-process).
4. MindRecord (the format MindFormers reads) vs the cache's memory-mapped flat arrays: write time, size, and the
   time to fetch random batches, on --mindrecord-rows rows.
Prints a table and one JSON line.
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PY = sys.executable
MINDTUNE = [PY, "-m", "mindtune.cli"]
WORDS = ("the a river stone light quick slow bright dark north south green city road window paper music seven "
         "answer question careful simple history science garden winter summer letter number bridge market "
         "energy silver golden mountain island forest ocean morning evening travel language").split()


def sentence(rng, lo, hi):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))).capitalize() + "."


def make_rows(path, n, seed=0):
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):
            row = {"system": "You are a helpful assistant." if i % 4 == 0 else "",
                   "instruction": sentence(rng, 10, 80), "input": sentence(rng, 5, 40) if i % 2 else "",
                   "output": sentence(rng, 10, 200)}
            f.write(json.dumps(row) + "\n")


def sft_config(path, model, data, cache, out, max_length, extra=""):
    with open(path, "w") as f:
        f.write(f"stage: sft\noutput_dir: {out}\nmodel: {{path: {model}}}\n"
                f"data: {{train: {data}, max_length: {max_length}, cache_dir: {cache}}}\n"
                f"train: {{batch_size: 4, max_steps: 2, save_total_limit: 1}}\n{extra}")
    return path


CODE = {"dir": REPO, "work": "/tmp"}   # --code: the mindtune source tree the subprocesses import


def run(cmd, env=None, watch=None):
    """(seconds, stdout, stderr, {marker: seconds after launch when a stdout line first contained it})."""
    began = time.perf_counter()
    path = os.pathsep.join(p for p in (CODE["dir"], os.environ.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=CODE["work"],
                            env=dict(os.environ, MINDTUNE_NO_PROGRESS="1", PYTHONPATH=path, **(env or {})))
    seen, lines = {}, []
    for line in proc.stdout:
        lines.append(line)
        for marker in watch or ():
            if marker in line and marker not in seen:
                seen[marker] = time.perf_counter() - began
    err = proc.stderr.read()
    proc.wait()
    if proc.returncode:
        raise SystemExit(f"failed: {' '.join(map(str, cmd))}\n{err[-3000:]}")
    return time.perf_counter() - began, "".join(lines), err, seen


def peak_rss_mb(cmd):
    _, out, err, _ = run(["/usr/bin/time", "-f", "PEAK_RSS_KB %M"] + cmd)
    kb = int([line for line in err.splitlines() if line.startswith("PEAK_RSS_KB")][-1].split()[1])
    return kb / 1024, out


def cache_meta(cache):
    [entry] = [d for d in os.listdir(cache) if os.path.isfile(os.path.join(cache, d, "meta.json"))]
    return os.path.join(cache, entry), json.load(open(os.path.join(cache, entry, "meta.json")))


def bench_prepare(args, work, data, model):
    """Both sides alternate for --rounds rounds on a fresh cache each; the best round of each is compared (other
    jobs share the 2 cores, so the best round is the one least disturbed)."""
    result = {"rounds": args.rounds, "mindtune_build_s_all": [], "ref_s_all": []}
    ref_ready = not args.no_ref and os.path.exists(args.ref_python)
    for _ in range(args.rounds):
        cache = os.path.join(work, "cache-speed")
        shutil.rmtree(cache, ignore_errors=True)
        cfg = sft_config(os.path.join(work, "speed.yaml"), model, data, cache, os.path.join(work, "run-speed"), 512)
        run(MINDTUNE + ["prepare", cfg, f"data.num_workers={args.workers}"])
        entry, meta = cache_meta(cache)
        result["mindtune_build_s_all"].append(meta["seconds"])
        if not ref_ready:
            continue
        hf_cache = os.path.join(work, "hf-cache")
        shutil.rmtree(hf_cache, ignore_errors=True)
        _, out, _, _ = run([args.ref_python, os.path.join(HERE, "ref_datasets_map.py"), data, model,
                            "--max-length", "512", "--num-proc", str(args.workers), "--cache", hf_cache])
        ref = json.loads(out.strip().splitlines()[-1])
        shutil.rmtree(hf_cache, ignore_errors=True)
        result["ref_s_all"].append(ref["load_s"] + ref["map_s"])
    rows = meta["read"]
    result.update(rows=rows, mindtune_rows_per_s=rows / min(result["mindtune_build_s_all"]))
    if not ref_ready:
        result["reference"] = f"skipped ({args.ref_python} missing: python3 -m venv /tmp/data-ref-venv && " \
                              "/tmp/data-ref-venv/bin/pip install datasets==4.0.0 transformers==4.57.1)"
        return result
    sys.path.insert(0, CODE["dir"])
    from mindtune.data.cache import CacheView
    view = CacheView(entry)
    same = sum(view.seq("tokens", i).tolist() == ids for i, ids in enumerate(ref["sample"]))
    result.update(ref_rows_per_s=ref["rows"] / min(result["ref_s_all"]), same_tokens=f"{same}/{len(ref['sample'])}")
    result["speed_ratio"] = result["mindtune_rows_per_s"] / result["ref_rows_per_s"]
    return result


def bench_memory_and_start(work, data_all, data_1k):
    """Tiny model (its own tokenizer), 2 training steps of batch 4 x 256."""
    res = {}
    cache = os.path.join(work, "cache-train")
    shutil.rmtree(cache, ignore_errors=True)
    cold_cfg = sft_config(os.path.join(work, "cold.yaml"), "tiny", data_all, cache, os.path.join(work, "run-cold"), 256)
    began = time.perf_counter()
    _, out, _, seen = run(["/usr/bin/time", "-f", "PEAK_RSS_KB %M"] + MINDTUNE + ["train", cold_cfg],
                          watch=("built in", "training rows"))
    _, meta = cache_meta(cache)
    res.update(cold_prepare_s=meta["seconds"], cold_first_step_s=seen["training rows"],
               cold_wall_s=time.perf_counter() - began)
    for name, data in (("all", data_all), ("1k", data_1k)):
        cfg = sft_config(os.path.join(work, f"warm-{name}.yaml"), "tiny", data, cache,
                         os.path.join(work, f"run-warm-{name}"), 256)
        run(MINDTUNE + ["prepare", cfg])
        shutil.rmtree(os.path.join(work, f"run-warm-{name}"), ignore_errors=True)
        res[f"peak_rss_mb_{name}"], _ = peak_rss_mb(MINDTUNE + ["train", cfg])
        shutil.rmtree(os.path.join(work, f"run-warm-{name}"), ignore_errors=True)
    res["rss_difference_mb"] = res["peak_rss_mb_all"] - res["peak_rss_mb_1k"]
    shutil.rmtree(os.path.join(work, "run-cold"), ignore_errors=True)
    cold_rss, _ = peak_rss_mb(MINDTUNE + ["train", cold_cfg, "output_dir=" + os.path.join(work, "run-cold2"),
                                          f"data.cache_dir={os.path.join(work, 'cache-cold2')}"])
    res["peak_rss_mb_all_first_run"] = cold_rss
    # the second run on the same data: launch to the stage's last line before the trainer starts
    warm_cfg = os.path.join(work, "warm-all.yaml")
    shutil.rmtree(os.path.join(work, "run-warm-all"), ignore_errors=True)
    _, out, _, seen = run(MINDTUNE + ["train", warm_cfg], watch=("reused", "training rows"))
    res["warm_first_step_s"] = seen["training rows"]
    code = ("import time\nfrom mindtune.config import load_config\n"
            "from mindtune.data.loading import stage_sets\nfrom mindtune.models.loading import resolve_model\n"
            "c = load_config(%r); r = resolve_model('tiny'); t = time.perf_counter()\n"
            "s, _ = stage_sets(c, r.tokenizer, r.spec.pad_token_id); s.batch(s.lengths.argsort()[:4])\n"
            "print('DATA_S', time.perf_counter() - t)") % (warm_cfg,)
    _, out, _, _ = run([PY, "-c", code])
    res["warm_data_s"] = float([line for line in out.splitlines() if line.startswith("DATA_S")][0].split()[1])
    res["start_ratio"] = res["cold_prepare_s"] / res["warm_first_step_s"]
    res["start_ratio_data_only"] = res["cold_prepare_s"] / res["warm_data_s"]
    return res


MINDRECORD = """
import json, os, sys, time
import numpy as np
from mindspore import dataset as ds
from mindspore.mindrecord import FileWriter
from mindtune.data.cache import CacheView
from mindtune.data.sets import Part, SFTSet
view = CacheView(%(entry)r)
n, L = min(%(rows)d, len(view)), 512
data = SFTSet([Part(view, "x", "x", 1.0, limit=0)], 0, L)
out = {}
path = os.path.join(%(work)r, "bench.mindrecord")
for f in (path, path + ".db"):
    if os.path.exists(f): os.remove(f)
t = time.perf_counter()
writer = FileWriter(path, shard_num=1, overwrite=True)
writer.add_schema({"input_ids": {"type": "int32", "shape": [-1]}, "labels": {"type": "int32", "shape": [-1]}}, "sft")
for a in range(0, n, 1000):
    x, y = data.batch(np.arange(a, min(a + 1000, n)))
    writer.write_raw_data([{"input_ids": x[i], "labels": y[i]} for i in range(len(x))])
writer.commit()
out["mindrecord_write_s"] = time.perf_counter() - t
out["mindrecord_mb"] = (os.path.getsize(path) + os.path.getsize(path + ".db")) / 2**20
rng = np.random.default_rng(0)
batches = [rng.choice(n, 4, replace=False).tolist() for _ in range(50)]
t = time.perf_counter()
for idx in batches:
    rows = list(ds.MindDataset(path, sampler=ds.SubsetSampler(idx)).create_dict_iterator(output_numpy=True))
out["mindrecord_batch_ms"] = (time.perf_counter() - t) / len(batches) * 1000
t = time.perf_counter()
for idx in batches:
    data.batch(idx)
out["cache_batch_ms"] = (time.perf_counter() - t) / len(batches) * 1000
size = sum(os.path.getsize(os.path.join(%(entry)r, f)) for f in os.listdir(%(entry)r))
out["cache_mb_all_rows"] = size / 2**20
out["cache_mb_per_row_vs_mindrecord"] = (size / len(view)) / ((out["mindrecord_mb"] * 2**20) / n)
print("RESULT", json.dumps(out))
"""


def bench_mindrecord(work, rows):
    entry, _ = cache_meta(os.path.join(work, "cache-speed"))
    _, out, _, _ = run([PY, "-c", MINDRECORD % {"entry": entry, "rows": rows, "work": work}])
    return json.loads([line for line in out.splitlines() if line.startswith("RESULT")][0][7:])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2, help="preparation rounds per side (best of each compared)")
    p.add_argument("--ref-python", default="/tmp/data-ref-venv/bin/python")
    p.add_argument("--model", default=os.path.join(REPO, "models", "smollm2-135m"),
                   help="model directory whose tokenizer and chat template the speed test uses")
    p.add_argument("--work", default="/tmp/bench-data")
    p.add_argument("--no-ref", action="store_true")
    p.add_argument("--mindrecord-rows", type=int, default=20_000)
    p.add_argument("--only", default="prepare,memory,mindrecord")
    p.add_argument("--code", default=REPO, help="mindtune source tree to run (e.g. a `git archive` of a commit)")
    args = p.parse_args()
    os.makedirs(args.work, exist_ok=True)
    CODE.update(dir=os.path.abspath(args.code), work=args.work)
    data_all = os.path.join(args.work, f"sft_{args.rows}.jsonl")
    data_1k = os.path.join(args.work, "sft_1000.jsonl")
    if not os.path.exists(data_all):
        make_rows(data_all, args.rows)
        make_rows(data_1k, 1000)
    result = {"rows": args.rows, "workers": args.workers}
    sections = {"prepare": lambda: bench_prepare(args, args.work, data_all, args.model),
                "memory": lambda: bench_memory_and_start(args.work, data_all, data_1k),
                "mindrecord": lambda: bench_mindrecord(args.work, args.mindrecord_rows)}
    for name in args.only.split(","):
        part = sections[name]()
        print(name, json.dumps(part), flush=True)   # each section as it finishes
        result.update(part)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
