"""Where a training step's time and memory go: one factor changed at a time, on the SmolLM2-135M architecture.

    python bench/diagnose_train.py [--only NAME,NAME] [--steps 3]

Each variant runs in its own process (a MindSpore process keeps its memory pool, so peak resident memory is
only comparable between fresh processes) and reports the median step time after the first (compiling) step,
the first step's time and the process's peak resident memory. The weights are random (the preset's
architecture, seeded): speed and memory do not depend on their values. The variants, from the issue that asked
for them: number of layers (2, 8, 30); sequence length at an equal number of tokens; the loss replaced by
`hidden.mean()` (what the output projection and cross-entropy cost); labels on 30% of the positions (an SFT
batch's responses: the loss projects those only); recompute on; PyNative instead of graph
mode; full fine-tuning. It also prints this machine's float32 matrix-product rate (numpy and MindSpore), the
physical floor of every step. Prints a table and one JSON line per variant.

    python bench/diagnose_train.py --profile base [--steps 3]

runs one variant under MindSpore's CPU profiler (started after the compiling step) and prints the op time per
step by op type; then the same step of transformers + PEFT under PyTorch's profiler (bench/ref_torch_profile.py,
REF_PYTHON's own environment; random weights of SmolLM2's configuration).

    python bench/diagnose_train.py --compile-phases layers2,layers8,base

times MindSpore's compile of each variant's training step by its actions (type inference, optimize with the
automatic differentiation, task_emit: the backend), from MindSpore's INFO log, with an empty compile cache.
"""
import argparse
import collections
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

BASE = dict(layers=30, bs=4, seq=256, method="lora", loss="ce", recompute="none", graph=True)
VARIANTS = {
    "base": {},
    "layers2": dict(layers=2),
    "layers8": dict(layers=8),
    "seq128x8": dict(bs=8, seq=128),
    "seq512x2": dict(bs=2, seq=512),
    "hidden_mean": dict(loss="hidden_mean"),
    "seq128": dict(seq=128),
    "seq128_hidden": dict(seq=128, loss="hidden_mean"),
    "labels30": dict(label_share=0.3),        # labels on the last 30% of each row, as SFT's responses
    "seq256x1_labels30": dict(bs=1, label_share=0.3),   # the packed epoch's step: one 256-token sequence
    "seq128_lora_wq": dict(seq=128, targets=("wq",)),        # 30 LoRA branches instead of 120
    "recompute": dict(recompute="full"),
    "pynative": dict(graph=False),
    "full": dict(method="none"),
    "l8": dict(layers=8),
    "l8_no_shim": dict(layers=8, no_shim=True),
    "no_shim": dict(no_shim=True),
    "no_fused": dict(no_fused=True),             # MindSpore's own kernels for RMSNorm and SiLU (mindtune.cpu_kernels)
    "full_no_fused": dict(method="none", no_fused=True),
    "seq256x1_labels30_no_fused": dict(bs=1, label_share=0.3, no_fused=True),
    "l8_somas": dict(layers=8, context={"memory_optimize_level": "O1"}),
    "l8_kernel": dict(layers=8, context={"enable_graph_kernel": True}),
    "l8_jitO1": dict(layers=8, context={"jit_config": {"jit_level": "O1"}}),
    "l8_recompute": dict(layers=8, recompute="full"),
    "l8_select": dict(layers=8, recompute="selective"),
    "l8_hidden": dict(layers=8, loss="hidden_mean"),
    "l8_interop1": dict(layers=8, context={"inter_op_parallel_num": 1}),
    "l8_opthreads1": dict(layers=8, op_threads=1),
    "l8_dispatch1": dict(layers=8, dispatch_threads=1),
    "l8_full": dict(layers=8, method="none"),
    "no_reuse": dict(no_reuse=True),        # every layer compiled on its own (mindtune.engine.cell_reuse off)
    "l8_no_reuse": dict(layers=8, no_reuse=True),
    "full_no_reuse": dict(method="none", no_reuse=True),
}


def child(variant: dict, steps: int, profile_dir: str = "") -> dict:
    from mindtune import shims
    shims.quiet_environment()
    from mindspore import nn

    from mindtune.config import load_config
    from mindtune.engine.buckets import gather_labels, plan_label_budgets
    from mindtune.engine.losses import CausalLMLoss
    from mindtune.engine.metrics import read_metrics
    from mindtune.engine.trainer import Trainer, TrainTask
    from mindtune.stages.common import build_adapted, check_inputs, prepare_run

    class HiddenMean(nn.Cell):   # the backbone alone: no output projection, no cross-entropy
        def __init__(self, network):
            super().__init__(auto_prefix=False)
            self.network = network

        def construct(self, input_ids, label_at, label_ids):
            hidden = self.network.backbone(input_ids)
            return hidden.mean(), (hidden.sum() * 0,)

    v = dict(BASE, **variant)
    if v.get("no_shim"):   # MindFormers' broadcasting primitives as they are (mindtune.shims.cpu_explicit_broadcasts)
        from mindtune import shims as mindtune_shims
        mindtune_shims.cpu_explicit_broadcasts = lambda network: 0
    if v.get("no_fused"):
        os.environ["MINDTUNE_CPU_KERNELS"] = "0"
    if v.get("no_reuse"):
        from mindtune.engine import cell_reuse
        cell_reuse.mark_repeated = lambda cells, ignore=(): None
    run_dir = tempfile.TemporaryDirectory(prefix="diagnose-")    # removed even if the run fails
    out = run_dir.name
    overrides = ["model.path=smollm2-135m", f"model.spec={{num_layers: {v['layers']}}}", f"data.train={__file__}",
                 f"data.max_length={v['seq']}", f"peft.method={v['method']}", "peft.rank=8", "peft.alpha=16",
                 f"train.batch_size={v['bs']}", f"train.max_steps={steps + 1}", "train.lr=1e-4",
                 "train.schedule=constant", "train.max_grad_norm=0", f"train.graph_mode={v['graph']}",
                 f"parallel.recompute={v['recompute']}", f"output_dir={out}", "train.save_every=0",
                 "train.compile_cache=false"]   # each variant compiles: its first step is measured
    if v.get("targets"):
        overrides.append(f"peft.target_modules=[{', '.join(v['targets'])}]")
    started = time.perf_counter()
    config = load_config(None, overrides)
    run = prepare_run(config, check_inputs(config, need_tokenizer=False))
    import mindspore as ms
    if v.get("context"):
        ms.set_context(**v["context"])
    if v.get("op_threads"):       # threads inside one CPU kernel
        ms.device_context.cpu.op_tuning.threads_num(v["op_threads"])
    if v.get("dispatch_threads"):  # the runtime's actor threads (5 by default)
        ms.runtime.dispatch_threads_num(v["dispatch_threads"])
    _, adapted = build_adapted(run)
    built = time.perf_counter() - started
    rng = np.random.default_rng(0)
    ids = rng.integers(100, 40000, (v["bs"], v["seq"])).astype(np.int32)
    labels = np.concatenate([ids[:, 1:], np.full((v["bs"], 1), -100, np.int32)], axis=1)
    if v.get("label_share"):     # only the last share of each row carries a label (an SFT row's response)
        labels[:, :int(v["seq"] * (1 - v["label_share"]))] = -100
    shaped = gather_labels((ids, labels), plan_label_budgets([v["seq"]], [(labels != -100).sum()], v["bs"]))
    cell = HiddenMean(adapted.network) if v["loss"] == "hidden_mean" else CausalLMLoss(adapted.network)
    profiler = None
    if profile_dir:
        from mindspore import Profiler
        profiler = Profiler(start_profile=False, output_path=profile_dir)

    def batch(k):
        if profiler is not None and k == 1:     # after the first (compiling) step
            profiler.start()
        return shaped

    task = TrainTask(cell, ("label_tokens",), adapted.trainable, batch)
    Trainer(config, out, task, run.profile, desc="diagnose").fit()
    if profiler is not None:
        profiler.stop()
        profiler.analyse()
    rows = read_metrics(os.path.join(out, "metrics.jsonl"))
    run_dir.cleanup()     # the run directory holds the final checkpoint: 1.6 GB for SmolLM2
    seconds = [v["bs"] * v["seq"] / r["tokens_per_s"] for r in rows]
    step = float(np.median(seconds[1:]))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"build_s": round(built, 1), "first_step_s": round(seconds[0], 1), "step_s": round(step, 3),
            "tokens_per_s": round(v["bs"] * v["seq"] / step, 1), "peak_rss_mb": round(peak_mb),
            "mb_per_token": round(peak_mb / (v["bs"] * v["seq"]), 2),
            "losses": [round(r["loss"], 5) for r in rows], "steps_s": [round(t, 2) for t in seconds[1:]]}


def op_times(profile_dir: str, steps: int) -> list:
    """(op type, ms a step, kernels a step) from the profiler's CPU op table, largest first."""
    import csv
    import glob

    totals, counts = collections.Counter(), collections.Counter()
    for path in glob.glob(os.path.join(profile_dir, "*", "FRAMEWORK", "cpu_op_detail_info_*.csv")):
        with open(path, encoding="utf-8") as f:
            for row in csv.DictReader(f):
                totals[row["op_type"]] += float(row["op_total_time(ms)"]) / steps
                counts[row["op_type"]] += int(row["op_occurrences"]) / steps
    return [(op, round(ms, 1), round(counts[op])) for op, ms in totals.most_common()]


def profile(name: str, steps: int) -> int:
    with tempfile.TemporaryDirectory(prefix="diagnose-profile-") as profile_dir:   # ~10 MB of traces a run
        proc = subprocess.run([sys.executable, __file__, "--child", name, "--steps", str(steps), "--profile-dir",
                               profile_dir], capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"{name} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1][:200]}")
        ops = op_times(profile_dir, steps)
    total = sum(ms for _, ms, _ in ops)
    v = dict(BASE, **VARIANTS[name])
    print(f"MindSpore, {name} {json.dumps(v)}: {total:.0f} ms of kernels a step "
          f"(step {json.loads(proc.stdout.splitlines()[-1])['step_s']} s)")
    for op, ms, n in ops[:20]:
        print(f"  {op:<28} {ms:>8.1f} ms {100 * ms / total:5.1f}%  {n:>5} kernels")
    python = os.environ.get("REF_PYTHON", "/tmp/ref-venv/bin/python")
    if os.path.exists(python):
        ref = subprocess.run([python, os.path.join(os.path.dirname(os.path.abspath(__file__)), "ref_torch_profile.py"),
                              "--method", "lora" if v["method"] == "lora" else "full", "--layers", str(v["layers"]),
                              "--batch", str(v["bs"]), "--seq", str(v["seq"]), "--steps", str(steps)],
                             capture_output=True, text=True)
        print(ref.stdout if ref.returncode == 0 else f"PyTorch reference failed: {ref.stderr.strip()[-300:]}")
    return 0


STATUS = re.compile(r"-(\d\d):(\d\d):(\d\d)\.(\d{3})\.(\d{3}) .*Status record: (start|end) (\S+) action")
GRAPH_SIZE = re.compile(r"total func graphs: (\d+), total nodes: (\d+)")


def compile_phases(name: str) -> dict:
    """Seconds of each of MindSpore's compile actions (from its INFO log's status records) for one variant's
    training step, and the number of func graphs and nodes after type inference."""
    started, seconds, last, size = {}, collections.Counter(), None, None
    with tempfile.TemporaryDirectory(prefix="diagnose-phases-") as cache:      # an empty compile cache
        env = dict(os.environ, GLOG_v="1", GLOG_logtostderr="1", MINDTUNE_CACHE_DIR=cache)
        proc = subprocess.Popen([sys.executable, __file__, "--child", name, "--steps", "1"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")
        for line in proc.stderr:        # the INFO log runs to hundreds of thousands of lines: read it as it comes
            m = STATUS.search(line)
            if m:
                h, mi, sec, ms, us, kind, action = m.groups()
                t = int(h) * 3600 + int(mi) * 60 + int(sec) + int(ms) / 1e3 + int(us) / 1e6
                if kind == "start":
                    started[action] = t
                else:
                    seconds[action] += t - started.pop(action, t)
                    last = action
                continue
            m = GRAPH_SIZE.search(line)
            if m and last == "type_inference" and size is None:
                size = (int(m.group(1)), int(m.group(2)))
        out = proc.stdout.read()
        if proc.wait():
            raise SystemExit(f"{name} failed (exit {proc.returncode})")
    main_actions = ("type_inference", "optimize", "task_emit")
    return dict(name=name, **{a: round(seconds[a], 1) for a in main_actions},
                other_actions=round(sum(v for a, v in seconds.items() if a not in main_actions), 1),
                func_graphs=size[0] if size else None, nodes=size[1] if size else None,
                first_step_s=json.loads(out.splitlines()[-1])["first_step_s"])


def matmul_rate(n: int = 2048, repeats: int = 5) -> dict:
    """GFLOP/s of an n x n float32 matrix product: numpy (the BLAS PyTorch also calls) and MindSpore's CPU MatMul."""
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    best = min(_timed(lambda: a @ a) for _ in range(repeats))
    rates = {"numpy_gflops": round(2 * n ** 3 / best / 1e9, 1)}
    from mindtune import shims
    shims.quiet_environment()
    import mindspore as ms
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    x = ms.Tensor(a)

    @ms.jit
    def matmul(t):
        return ms.ops.matmul(t, t)

    matmul(x).asnumpy()
    best = min(_timed(lambda: matmul(x).asnumpy()) for _ in range(repeats))
    rates["mindspore_gflops"] = round(2 * n ** 3 / best / 1e9, 1)
    return rates


def _timed(fn) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default=",".join(VARIANTS))
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--profile", metavar="VARIANT", help="profile one variant's steps by op type, and the reference's")
    p.add_argument("--compile-phases", metavar="VARIANTS",
                   help="where the first step's compile goes, per variant (comma-separated): MindSpore's compile "
                        "actions in seconds and the graph's size, from an empty compile cache")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--profile-dir", default="", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(child(VARIANTS[a.child], a.steps, a.profile_dir)))
        return 0
    if a.profile:
        if a.profile not in VARIANTS:
            p.error(f"--profile: unknown variant {a.profile!r} (one of {', '.join(VARIANTS)})")
        return profile(a.profile, a.steps)
    if a.compile_phases:
        unknown = [n for n in a.compile_phases.split(",") if n not in VARIANTS]
        if unknown:
            p.error(f"--compile-phases: unknown variant {unknown[0]!r} (one of {', '.join(VARIANTS)})")
        for name in a.compile_phases.split(","):
            print(json.dumps(compile_phases(name)), flush=True)
        return 0
    if a.only == "matmul":
        print(json.dumps(matmul_rate()))
        return 0
    rate = json.loads(subprocess.run([sys.executable, __file__, "--only", "matmul"], check=True,
                                     capture_output=True, text=True).stdout.splitlines()[-1])
    print(f"float32 matrix product on this machine: numpy {rate['numpy_gflops']} GFLOP/s, "
          f"MindSpore {rate['mindspore_gflops']} GFLOP/s", flush=True)
    print(f"{'variant':<12} {'s/step':>8} {'tokens/s':>9} {'first step s':>13} {'peak MB':>8} {'MB/token':>9}")
    for name in a.only.split(","):
        proc = subprocess.run([sys.executable, __file__, "--child", name, "--steps", str(a.steps)],
                              capture_output=True, text=True)
        if proc.returncode:
            print(f"{name:<12} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1][:200]}", flush=True)
            continue
        r = json.loads(proc.stdout.splitlines()[-1])
        print(f"{name:<12} {r['step_s']:>8} {r['tokens_per_s']:>9} {r['first_step_s']:>13} {r['peak_rss_mb']:>8} "
              f"{r['mb_per_token']:>9}   {json.dumps(dict(BASE, **VARIANTS[name]))}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
