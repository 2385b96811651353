#!/usr/bin/env bash
# Run one stage (sft | rm | ppo | dpo) of a config through scripts/msrun_launcher.sh, after checking that the
# config names that stage and passes `mindtune validate`. Used by scripts/train_{sft,rm,ppo}.sh.
#   scripts/run_stage.sh STAGE CONFIG.yaml [dotted.key=value ...]
# Environment: WORKERS (default 8), LOCAL_WORKERS, MASTER_ADDR, MASTER_PORT, NODE_RANK, LOG_DIR, MINDTUNE_PYTHON;
# DRY_RUN=1 prints the msrun command instead of running it.
set -u
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prog="run_stage"
[ "$#" -ge 2 ] || { echo "usage: $0 sft|rm|ppo|dpo CONFIG.yaml [dotted.key=value ...]" >&2; exit 2; }
stage="$1"; config="$2"; shift 2
case "$stage" in sft|rm|ppo|dpo|grpo) ;; *) echo "$prog: unknown stage '$stage' (sft, rm, ppo, dpo, grpo)" >&2; exit 2 ;; esac
[ -f "$config" ] || { echo "$prog: config not found: $config" >&2; exit 2; }
python="${MINDTUNE_PYTHON:-python3}"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
named="$("$python" - "$config" "$@" <<'PY'
import sys
from mindtune.config import load_config
from mindtune.errors import MindtuneError
try:
    print(load_config(sys.argv[1], sys.argv[2:]).stage)
except MindtuneError as exc:
    print(f"error: {exc}")
PY
)" || { echo "$prog: cannot read $config with $python (set MINDTUNE_PYTHON)" >&2; exit 2; }
case "$named" in error:*) echo "$prog: $config: ${named#error: }" >&2; exit 2 ;; esac
[ "$named" = "$stage" ] || { echo "$prog: $config is a '$named' config, not '$stage'" >&2; exit 2; }
"$python" -m mindtune.cli validate "$config" "$@" || exit 2
args=(--workers "${WORKERS:-8}")
[ -n "${LOCAL_WORKERS:-}" ] && args+=(--local-workers "$LOCAL_WORKERS")
[ -n "${MASTER_ADDR:-}" ] && args+=(--master-addr "$MASTER_ADDR")
[ -n "${MASTER_PORT:-}" ] && args+=(--master-port "$MASTER_PORT")
[ -n "${NODE_RANK:-}" ] && args+=(--node-rank "$NODE_RANK")
[ -n "${LOG_DIR:-}" ] && args+=(--log-dir "$LOG_DIR")
[ "${DRY_RUN:-0}" = "1" ] && args+=(--dry-run)
exec "$repo/scripts/msrun_launcher.sh" "${args[@]}" -- mindtune train "$config" "$@"
