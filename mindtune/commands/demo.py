"""mindtune demo: the embedded default run — a tiny Llama trained from scratch on a small synthetic task, with the
held-out exact match printed before and after. `--real` fine-tunes SmolLM2-135M-Instruct with LoRA on a task the
base model fails (see demo_real.py); `--pipeline` runs SFT -> RM -> PPO on the tiny model."""
import os
import time

from mindtune.config import load_config

ASSETS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets")


def demo_overrides(output_dir: str) -> list:
    return [f"output_dir={output_dir}",
            f"data.train={os.path.join(ASSETS, 'demo_upper_train.jsonl')}",
            f"data.eval={os.path.join(ASSETS, 'demo_upper_eval.jsonl')}"]


def register(sub):
    p = sub.add_parser("demo", help="train a tiny Llama from scratch on a synthetic task and show its held-out exact "
                                    "match rise from 0 to about 100%% (under a minute on 2 CPU cores)")
    p.add_argument("--output-dir", default=None,
                   help="run directory (default: runs/demo, or runs/demo-N if that one is taken)")
    p.add_argument("--real", action="store_true",
                   help="LoRA fine-tuning of SmolLM2-135M-Instruct on a task the base model fails (fetches the "
                        "model into models/smollm2-135m if missing; under ten minutes on 2 CPU cores)")
    p.add_argument("--pipeline", action="store_true", help="SFT -> reward model -> PPO on the tiny model")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(func=run)


def run(args) -> int:
    from mindtune.stages import run_stage

    if args.pipeline:
        from mindtune.stages.pipeline import run_demo_pipeline
        return run_demo_pipeline(args.output_dir or _free_dir("runs/demo-pipeline"), list(args.overrides))
    if args.real:
        from mindtune.commands.demo_real import run_real_demo
        return run_real_demo(args.output_dir or _free_dir("runs/demo-real"), list(args.overrides))
    output_dir = args.output_dir or _free_dir("runs/demo")
    config = load_config(None, demo_overrides(output_dir) + list(args.overrides), defaults=DEMO)
    method = "full fine-tuning" if config.peft.method == "none" else config.peft.method
    print(f"mindtune demo: {method} of a tiny Llama from random weights, on CPU -> {config.output_dir}\n"
          "task: write four letters in capitals ('q-w-e-r' -> 'Q-W-E-R'); scored by exact match on 64 held-out "
          "rows whose letter sequences never occur in training", flush=True)
    began = time.time()
    summary = run_stage(config)
    print(headline(summary, time.time() - began))
    return 0


def headline(summary: dict, seconds: float, metric: str = "eval_exact_match") -> str:
    """`held-out exact match: 0.0% -> 100.0% in 95 s`."""
    start, end = summary.get("eval_at_start", {}).get(metric), summary.get("last", {}).get(metric)
    if start is None or end is None:
        return f"done in {seconds:.0f} s"
    return f"held-out exact match: {100 * start:.1f}% -> {100 * end:.1f}% in {seconds:.0f} s"


def _free_dir(base: str) -> str:
    candidate, n = base, 1
    while os.path.exists(candidate):
        n += 1
        candidate = f"{base}-{n}"
    return candidate


# The demo's experiment, embedded so that it runs from an installed package with no files beside it
# (run_configs/tiny/sft_demo_cpu.yaml is the same experiment as a file). Full fine-tuning from random weights:
# a random base under LoRA has nothing to adapt. Two layers suffice for the task (a copy at a fixed offset plus a
# letter -> capital map). A bare prompt format (the prompt, a newline, the answer, end of turn) instead of the
# ChatML template leaves fewer tokens to attend past. With Llama's 0.02 initialisation and lr 5e-3 the run hung on
# whether (and when) the copy was found: 6 of seeds 0-9 reached 1.0, the others stalled between 0.0 and 0.84, and
# seed 0's 1.0 turned into 0.75 under a numerically neutral kernel change. With random_weights' fan-in
# initialisation (mindtune.models.build.init_std) and lr 2e-3, seeds 0-9 all reached 1.0 by step 100 (sweeps in
# bench/README.md, "The demo's initialisation"); 350 steps leave a wide margin.
DEMO_TEMPLATE = ("{% for message in messages %}{{ message['content'] }}{% if message['role'] == 'user' %}{{ '\\n' }}"
                 "{% else %}{{ '<|im_end|>' }}{% endif %}{% endfor %}")
DEMO = {
    "stage": "sft",
    "seed": 0,
    "model": {"path": "tiny", "spec": {"num_layers": 2, "hidden_size": 128, "num_heads": 4, "num_kv_heads": 2,
                                       "intermediate_size": 256}, "chat_template": DEMO_TEMPLATE},
    "data": {"max_length": 32},
    "train": {"batch_size": 16, "max_steps": 350, "lr": 2e-3, "warmup_steps": 10, "schedule": "cosine",
              "log_every": 10, "eval_every": 50, "save_every": 125, "resume": "never",
              "eval_metrics": ["exact_match"], "eval_max_new_tokens": 12},
    "peft": {"method": "none"},
}
