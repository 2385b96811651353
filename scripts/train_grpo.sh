#!/usr/bin/env bash
# GRPO stage (rule or reward-model rewards) on one server (or one node of many) through msrun:
#   bash scripts/train_grpo.sh CONFIG.yaml [dotted.key=value ...]
# Launcher options come from the environment: WORKERS (default 8), LOCAL_WORKERS, MASTER_ADDR, MASTER_PORT,
# NODE_RANK, LOG_DIR. The config must say `stage: grpo`; `mindtune validate` checks it first.
set -u
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ "$#" -ge 1 ] || { echo "usage: $0 CONFIG.yaml [dotted.key=value ...]" >&2; exit 2; }
[ -f "$1" ] || { echo "train_grpo: config not found: $1" >&2; exit 2; }
exec "$repo/scripts/run_stage.sh" grpo "$@"
