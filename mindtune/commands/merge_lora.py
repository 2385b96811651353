"""mindtune merge-lora ADAPTER OUTPUT: fold a LoRA adapter (W + scaling * B A) — or a BitFit adapter (its q/k/v
biases) — into its base model's weights and write a plain model directory, which `generate`, `score`,
`train` (model.path) and `convert --to-hf` take like any converted model.

ADAPTER is a PEFT run's `model/` directory or the run directory itself; the base model is the one recorded in
the adapter (`base_model`). Runs in numpy: no network is built.
"""
import os
import sys
import time


def register(sub):
    p = sub.add_parser("merge-lora", help="fold a LoRA (or BitFit) adapter into its base -> plain model directory")
    p.add_argument("adapter", nargs="?", help="adapter directory (a run's model/) or run directory")
    p.add_argument("output", nargs="?", help="model directory to write")
    p.add_argument("--adapter", dest="adapter_opt", metavar="DIR", help="same as the positional ADAPTER")
    p.add_argument("--output", dest="output_opt", metavar="DIR", help="same as the positional OUTPUT")
    p.set_defaults(func=run)


def run(args) -> int:
    import dataclasses

    from mindtune.errors import ConfigError
    from mindtune.models.model_dir import write_model_dir
    from mindtune.peft import merged_model

    adapter = args.adapter_opt or args.adapter
    output = args.output_opt or args.output
    if not adapter or not output:
        raise ConfigError("merge-lora: give the adapter directory and the output directory "
                          "(mindtune merge-lora RUN_DIR/model OUT_DIR)")
    if os.path.abspath(output) == os.path.abspath(adapter):
        raise ConfigError(f"--output: {output} is the adapter directory itself; choose another directory")
    start = time.time()
    resolved, spec, weights, cfg = merged_model(adapter)
    meta = {"merged_from": resolved.source, "base_model": resolved.model_dir.meta["base_model"],
            "peft": dataclasses.asdict(cfg), "stage": resolved.model_dir.meta.get("stage")}
    write_model_dir(output, spec, weights, meta, tokenizer=resolved.tokenizer)
    print(f"mindtune merge-lora: folded the {cfg.method} adapter {resolved.source} into "
          f"{meta['base_model']} -> {output} ({time.time() - start:.1f}s)", file=sys.stderr)
    return 0
