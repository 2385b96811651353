"""mindtune demo: the embedded default run — LoRA SFT of a tiny Llama on the shipped instruction set."""
import os

from mindtune.config import load_config

ASSETS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets")


def demo_overrides(output_dir: str) -> list:
    return [f"output_dir={output_dir}",
            f"data.train={os.path.join(ASSETS, 'demo_sft_train.jsonl')}",
            f"data.eval={os.path.join(ASSETS, 'demo_sft_eval.jsonl')}"]


def register(sub):
    p = sub.add_parser("demo", help="fine-tune a tiny Llama with LoRA on the shipped instruction set (under a minute on 2 CPU cores)")
    p.add_argument("--output-dir", default=None,
                   help="run directory (default: runs/demo, or runs/demo-N if that one is taken)")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(func=run)


def run(args) -> int:
    from mindtune.stages import run_stage

    output_dir = args.output_dir or _free_dir("runs/demo")
    config = load_config(None, demo_overrides(output_dir) + list(args.overrides), defaults=DEMO)
    method = "full" if config.peft.method == "none" else config.peft.method
    print(f"mindtune demo: SFT ({method}) of a tiny random Llama on CPU -> {config.output_dir}")
    run_stage(config)
    return 0


def _free_dir(base: str) -> str:
    candidate, n = base, 1
    while os.path.exists(candidate):
        n += 1
        candidate = f"{base}-{n}"
    return candidate


# The demo's experiment, embedded so that it runs from an installed package with no files beside it
# (run_configs/tiny/sft_lora_cpu.yaml is the same experiment as a file).
DEMO = {
    "stage": "sft",
    "seed": 0,
    "model": {"path": "tiny", "spec": {"num_layers": 4, "hidden_size": 128, "num_heads": 4, "num_kv_heads": 2,
                                       "intermediate_size": 256}},
    "data": {"max_length": 64},
    "train": {"batch_size": 8, "max_steps": 300, "lr": 3e-3, "warmup_steps": 10, "schedule": "cosine",
              "log_every": 10, "eval_every": 100, "save_every": 100, "resume": "never"},
    "peft": {"method": "lora", "rank": 16, "alpha": 32, "target_modules": ["wq", "wk", "wv", "wo", "w1", "w2", "w3"]},
}
