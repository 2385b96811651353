#!/usr/bin/env bash
# ModelArts training-job boot command (set it as the job's start command on every node):
#   bash scripts/modelarts_entry.sh --data-url obs://bucket/data --train-url obs://bucket/out \
#        -- mindtune train run_configs/llama2-7b/sft_lora_910b_8.yaml data.train=/cache/data/train.jsonl
# Reads MA_NUM_HOSTS, VC_TASK_INDEX, VC_WORKER_HOSTS, MA_NUM_GPUS and the rank table (converted to v1.0),
# copies data and outputs with moxing, runs scripts/msrun_launcher.sh and exits with the training's status.
# See mindtune/launch/modelarts.py for every option.
set -u
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${MINDTUNE_PYTHON:-python3}"
[ -f "$repo/ascend_env/set_env.sh" ] && [ -z "${MINDTUNE_SKIP_SET_ENV:-}" ] && \
  source "$repo/ascend_env/set_env.sh" --quiet
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" -m mindtune.launch.modelarts "$@"
