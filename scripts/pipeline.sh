#!/usr/bin/env bash
# The InstructGPT pipeline under msrun on one Ascend server (or one node of many): SFT, then the reward model,
# then PPO, each stage's output feeding the next.
#   bash scripts/pipeline.sh SFT.yaml RM.yaml PPO.yaml OUTPUT_ROOT [dotted.key=value ...]
# Runs OUTPUT_ROOT/sft, OUTPUT_ROOT/rm and OUTPUT_ROOT/ppo (with ppo.actor=OUTPUT_ROOT/sft and
# ppo.reward_model=OUTPUT_ROOT/rm); the overrides apply to every stage. Each stage is validated just before it
# starts (scripts/run_stage.sh) and a failed stage stops the pipeline with its exit status.
# Environment: as scripts/run_stage.sh (WORKERS, LOCAL_WORKERS, MASTER_ADDR, MASTER_PORT, NODE_RANK, LOG_DIR,
# MINDTUNE_PYTHON); DRY_RUN=1 checks and prints the SFT and RM commands and prints PPO's.
# Example (8 x 910B): bash scripts/pipeline.sh run_configs/llama2-7b/sft_lora_910b_8.yaml \
#   run_configs/llama2-7b/rm_lora_910b_8.yaml run_configs/llama2-7b/ppo_lora_910b_8.yaml runs/llama2-7b-rlhf
set -u
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ "$#" -ge 4 ] || { echo "usage: $0 SFT.yaml RM.yaml PPO.yaml OUTPUT_ROOT [dotted.key=value ...]" >&2; exit 2; }
sft="$1"; rm_config="$2"; ppo="$3"; root="$4"; shift 4
for config in "$sft" "$rm_config" "$ppo"; do
  [ -f "$config" ] || { echo "pipeline: config not found: $config" >&2; exit 2; }
done
"$repo/scripts/run_stage.sh" sft "$sft" "output_dir=$root/sft" "$@" || exit $?
"$repo/scripts/run_stage.sh" rm "$rm_config" "output_dir=$root/rm" "$@" || exit $?
if [ "${DRY_RUN:-0}" = "1" ] && [ ! -d "$root/sft" ]; then
  echo "pipeline: then: scripts/run_stage.sh ppo $ppo output_dir=$root/ppo ppo.actor=$root/sft ppo.reward_model=$root/rm $*"
  exit 0
fi
exec "$repo/scripts/run_stage.sh" ppo "$ppo" "output_dir=$root/ppo" "ppo.actor=$root/sft" \
  "ppo.reward_model=$root/rm" "$@"
