#!/usr/bin/env bash
# Launch a mindtune job (or any MindSpore script) with msrun, on one node or as one node of many.
#
#   scripts/msrun_launcher.sh [options] mindtune COMMAND [ARGS...]    e.g. mindtune train run.yaml
#   scripts/msrun_launcher.sh [options] -m MODULE [ARGS...]
#   scripts/msrun_launcher.sh [options] SCRIPT.py [ARGS...]
#
# Options (msrun's, checked here first so nonsense fails in a second with a clear message):
#   --workers N           workers in the whole job (default 8)
#   --local-workers N     workers on this node (default: --workers, i.e. one node)
#   --master-addr ADDR    scheduler host, node 0's address (default 127.0.0.1; required with several nodes)
#   --master-port PORT    scheduler port, 1024-65535 (default 8118); must be free on node 0
#   --node-rank R         this node's index 0..nodes-1 (required with several nodes)
#   --log-dir DIR         worker logs (default ./msrun_log); worker_<rank>.log, scheduler.log
#   --join true|false     wait for the workers and report how they ended (default true)
#   --cluster-timeout S   seconds to wait for every worker to join the cluster (default 600)
#   --bind-core true|false
#   --rank-table FILE     a v1.0 rank table for msrun's features that read one (not needed to start)
#   --tail-log R|all|none which of this node's workers (local index) to copy to the console (default 0, the
#                         node's first worker; msrun is given its global rank)
#   --dry-run             print the msrun command and exit
# Environment: MINDTUNE_PYTHON, the python of the environment with MindSpore (default: python3 on PATH);
# GLOG_v (MindSpore log level, default 3 = errors only).
#
# Exit status: 0 when every worker succeeded; 2 for bad arguments; otherwise non-zero with one line per failed
# rank ("rank 1 killed by SIGKILL (log: ...)").
set -u -o pipefail

prog="msrun_launcher"
die() { echo "$prog: $*" >&2; exit 2; }
is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }

workers=8; local_workers=""; master_addr=""; master_port=8118; node_rank=""; log_dir="./msrun_log"
join="true"; cluster_timeout=600; bind_core=""; dry_run=0; rank_table=""; tail_log=0

need_value() { [ "$#" -ge 2 ] && [ -n "$2" ] || die "$1 needs a value"; }
while [ "$#" -gt 0 ]; do
  case "$1" in
    --workers) need_value "$@"; workers="$2"; shift 2 ;;
    --local-workers) need_value "$@"; local_workers="$2"; shift 2 ;;
    --master-addr) need_value "$@"; master_addr="$2"; shift 2 ;;
    --master-port) need_value "$@"; master_port="$2"; shift 2 ;;
    --node-rank) need_value "$@"; node_rank="$2"; shift 2 ;;
    --log-dir) need_value "$@"; log_dir="$2"; shift 2 ;;
    --join) need_value "$@"; join="$2"; shift 2 ;;
    --cluster-timeout) need_value "$@"; cluster_timeout="$2"; shift 2 ;;
    --bind-core) need_value "$@"; bind_core="$2"; shift 2 ;;
    --rank-table) need_value "$@"; rank_table="$2"; shift 2 ;;
    --tail-log) need_value "$@"; tail_log="$2"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; break ;;
    --*) die "unknown option $1 (see --help)" ;;
    *) break ;;
  esac
done
[ "$#" -ge 1 ] || die "nothing to run: give 'mindtune COMMAND ...', '-m MODULE ...' or SCRIPT.py (see --help)"

# -- the numbers -----------------------------------------------------------------------------------------
is_uint "$workers" && [ "$workers" -ge 1 ] || die "--workers must be a positive integer, got '$workers'"
local_workers="${local_workers:-$workers}"
is_uint "$local_workers" && [ "$local_workers" -ge 1 ] || \
  die "--local-workers must be a positive integer, got '$local_workers'"
[ "$local_workers" -le "$workers" ] || die "--local-workers $local_workers exceeds --workers $workers"
[ $((workers % local_workers)) -eq 0 ] || \
  die "--workers $workers is not a multiple of --local-workers $local_workers (every node runs the same count)"
nodes=$((workers / local_workers))
is_uint "$master_port" && [ "$master_port" -ge 1024 ] && [ "$master_port" -le 65535 ] || \
  die "--master-port must be an integer in 1024-65535, got '$master_port'"
[[ "$cluster_timeout" =~ ^-?[0-9]+$ ]] && [ "$cluster_timeout" -ne 0 ] || \
  die "--cluster-timeout must be a number of seconds (or -1 to wait forever), got '$cluster_timeout'"
case "$join" in true|True) join=True ;; false|False) join=False ;; *) die "--join must be true or false, got '$join'" ;; esac
case "$bind_core" in ""|true|True|false|False) ;; *) die "--bind-core must be true or false, got '$bind_core'" ;; esac
case "$tail_log" in
  all|none) ;;
  *) is_uint "$tail_log" && [ "$tail_log" -lt "$local_workers" ] || \
       die "--tail-log must be a local worker index 0..$((local_workers - 1)), all or none, got '$tail_log'" ;;
esac
[ -z "$rank_table" ] || [ -f "$rank_table" ] || die "--rank-table file not found: $rank_table"
if [ "$nodes" -gt 1 ]; then
  [ -n "$master_addr" ] || die "$nodes nodes ($workers workers, $local_workers per node) need --master-addr (node 0's address)"
  [ -n "$node_rank" ] || die "$nodes nodes need --node-rank (0..$((nodes - 1))) on every node"
  case "$master_addr" in 127.*|localhost) die "--master-addr $master_addr is a loopback address; other nodes cannot reach it" ;; esac
else
  master_addr="${master_addr:-127.0.0.1}"
  node_rank="${node_rank:-0}"
fi
is_uint "$node_rank" && [ "$node_rank" -lt "$nodes" ] || \
  die "--node-rank must be an integer in 0..$((nodes - 1)) for $nodes node(s), got '$node_rank'"
# msrun's --tail_worker_log takes global ranks (node_rank x local workers + local index): map the local index;
# `none` names a rank no worker has (the job's worker count), `all` is msrun's default
case "$tail_log" in
  all) tail_log="" ;;
  none) tail_log="$workers" ;;
  *) tail_log=$((node_rank * local_workers + tail_log)) ;;
esac

# -- the environment: msrun starts workers with plain `python`, so that must be this environment's ------------
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${MINDTUNE_PYTHON:-python3}"
python="$(command -v "$python" 2>/dev/null)" || die "python not found (${MINDTUNE_PYTHON:-python3}); set MINDTUNE_PYTHON"
"$python" -c "import importlib.util as u, sys; sys.exit(u.find_spec('mindspore') is None)" 2>/dev/null || \
  die "$python cannot import mindspore; set MINDTUNE_PYTHON to the python of the MindSpore environment"
pybin="$(dirname "$python")"
msrun="$pybin/msrun"
[ -x "$msrun" ] || msrun="$(command -v msrun 2>/dev/null)" || die "msrun not found next to $python nor on PATH"
export PATH="$pybin:$PATH"
export GLOG_v="${GLOG_v:-3}"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"

# -- what to run -------------------------------------------------------------------------------------------
target=()
case "$1" in
  mindtune) shift; [ "$#" -ge 1 ] || die "'mindtune' needs a command, e.g. mindtune train run.yaml"
            target=(-m mindtune.cli "$@") ;;
  -m) [ "$#" -ge 2 ] || die "-m needs a module name"; target=("$@") ;;
  *) [ -f "$1" ] || die "script not found: $1"
     script="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; shift; target=("$script" "$@") ;;
esac

if [ "$nodes" -eq 1 ] || [ "$node_rank" -eq 0 ]; then
  # the scheduler listens on node 0: its port must be free there
  "$python" - "$master_port" <<'PY' || die "--master-port $master_port is already in use on this host; choose another"
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("", int(sys.argv[1])))
except OSError:
    sys.exit(1)
PY
fi

cmd=("$msrun" --worker_num "$workers" --local_worker_num "$local_workers" --master_addr "$master_addr"
     --master_port "$master_port" --log_dir "$log_dir" --join "$join" --cluster_time_out "$cluster_timeout")
[ "$nodes" -gt 1 ] && cmd+=(--node_rank "$node_rank")
[ -n "$bind_core" ] && cmd+=(--bind_core "$( [[ "$bind_core" =~ ^[tT] ]] && echo True || echo False )")
[ -n "$rank_table" ] && cmd+=(--rank_table_file "$(cd "$(dirname "$rank_table")" && pwd)/$(basename "$rank_table")")
[ -n "$tail_log" ] && cmd+=(--tail_worker_log "$tail_log")
cmd+=("$repo/mindtune/launch/worker.py" "${target[@]}")

if [ "$dry_run" -eq 1 ]; then
  printf '%q ' "${cmd[@]}"; echo
  exit 0
fi

mkdir -p "$log_dir" || die "cannot create --log-dir $log_dir"
log_dir="$(cd "$log_dir" && pwd)"
export MINDTUNE_STATUS_DIR="$log_dir/.mindtune_status"
rm -rf "$MINDTUNE_STATUS_DIR"
output="$log_dir/msrun_output.log"
echo "$prog: $nodes node(s) x $local_workers worker(s), node $node_rank, scheduler $master_addr:$master_port, logs in $log_dir"

# msrun runs in the background so a Ctrl+C or SIGTERM here reaches it (it then stops every worker)
"${cmd[@]}" > >(tee "$output") 2>&1 &
msrun_pid=$!
trap 'kill -INT "$msrun_pid" 2>/dev/null' INT TERM
rc=0
while :; do
  wait "$msrun_pid"; rc=$?
  kill -0 "$msrun_pid" 2>/dev/null || break   # a trapped signal interrupts wait; msrun may still be stopping
done
trap - INT TERM
sleep 0.2   # let tee finish writing the output file

if [ "$join" = "False" ]; then
  [ "$rc" -eq 0 ] && echo "$prog: workers started (not joined); see $log_dir" || echo "$prog: msrun failed ($rc)" >&2
  exit "$rc"
fi
report="$("$python" -m mindtune.launch.postmortem "$MINDTUNE_STATUS_DIR" "$log_dir" "$output" 2>&1)"
if [ "$rc" -ne 0 ] || [ -n "$report" ]; then
  if [ -n "$report" ]; then
    while IFS= read -r line; do echo "$prog: $line" >&2; done <<< "$report"
  else
    echo "$prog: msrun exited with status $rc and no rank reported a failure; see $log_dir/scheduler.log" >&2
  fi
  [ "$rc" -ne 0 ] && exit "$rc" || exit 1
fi
echo "$prog: all $local_workers worker(s) on node $node_rank finished"
exit 0
