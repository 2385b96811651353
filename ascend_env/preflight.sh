#!/usr/bin/env bash
# Check an Ascend server before a job: NPUs healthy and free, HCCN links up, master port free, disk room.
#   bash ascend_env/preflight.sh [--devices 8] [--port 8118] [--disk-path .] [--min-free-gb 50]
#                                [--max-hbm-used 10] [--require-npu]
# Prints one line per check ([ OK ], [FAIL], [SKIP]) and exits 1 if any check failed, 2 for bad arguments.
# Without npu-smi / hccn_tool (a CPU machine) the NPU checks are skipped with a plain message; add
# --require-npu to count that as a failure. NPU_SMI and HCCN_TOOL override the tools' paths.
set -u
prog="preflight"
devices=8; port=8118; disk_path="."; min_free_gb=50; max_hbm=10; require_npu=0
die() { echo "$prog: $*" >&2; exit 2; }
is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }
while [ "$#" -gt 0 ]; do
  case "$1" in
    --devices) devices="${2:-}"; shift 2 || die "--devices needs a value" ;;
    --port) port="${2:-}"; shift 2 || die "--port needs a value" ;;
    --disk-path) disk_path="${2:-}"; shift 2 || die "--disk-path needs a value" ;;
    --min-free-gb) min_free_gb="${2:-}"; shift 2 || die "--min-free-gb needs a value" ;;
    --max-hbm-used) max_hbm="${2:-}"; shift 2 || die "--max-hbm-used needs a value" ;;
    --require-npu) require_npu=1; shift ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
is_uint "$devices" && [ "$devices" -ge 1 ] && [ "$devices" -le 16 ] || die "--devices must be 1-16, got '$devices'"
is_uint "$port" && [ "$port" -ge 1024 ] && [ "$port" -le 65535 ] || die "--port must be 1024-65535, got '$port'"
is_uint "$min_free_gb" || die "--min-free-gb must be a whole number of GB, got '$min_free_gb'"
is_uint "$max_hbm" && [ "$max_hbm" -le 100 ] || die "--max-hbm-used must be a percentage 0-100, got '$max_hbm'"
[ -d "$disk_path" ] || die "--disk-path $disk_path is not a directory"

failed=0
ok() { echo "[ OK ] $*"; }
fail() { echo "[FAIL] $*"; failed=1; }
skip() { echo "[SKIP] $*"; }
find_tool() {  # $1 override variable value, $2 name, $3 usual path
  if [ -n "$1" ]; then [ -x "$1" ] && echo "$1"; return; fi
  command -v "$2" 2>/dev/null || { [ -x "$3" ] && echo "$3"; }
}
field() { sed -n "s/^[[:space:]]*$1[[:space:]]*:[[:space:]]*//p" | head -n1 | tr -d '[:space:]'; }

npu_smi="$(find_tool "${NPU_SMI:-}" npu-smi /usr/local/sbin/npu-smi)"
hccn="$(find_tool "${HCCN_TOOL:-}" hccn_tool /usr/local/Ascend/driver/tools/hccn_tool)"

# -- NPUs ----------------------------------------------------------------------------------------------------
if [ -z "$npu_smi" ]; then
  msg="npu-smi not found: no Ascend driver on this host (a CPU machine?); NPU health and memory not checked"
  if [ "$require_npu" -eq 1 ]; then fail "$msg"; else skip "$msg"; fi
else
  for ((d = 0; d < devices; d++)); do
    health="$("$npu_smi" info -t health -i "$d" 2>&1 | field 'Health Status')"
    if [ "$health" = "OK" ]; then ok "npu $d health OK"; else fail "npu $d health '${health:-no answer}' (npu-smi info -t health -i $d)"; fi
    usage="$("$npu_smi" info -t usages -i "$d" 2>&1)"
    hbm="$(echo "$usage" | field 'HBM Usage Rate(%)')"
    cap="$(echo "$usage" | field 'HBM Capacity(MB)')"
    if ! is_uint "${hbm:-x}"; then fail "npu $d HBM usage unreadable (npu-smi info -t usages -i $d)"
    elif [ "$hbm" -gt "$max_hbm" ]; then fail "npu $d HBM ${hbm}% used (of ${cap:-?} MB): another process holds it?"
    else ok "npu $d HBM ${hbm}% used of ${cap:-?} MB"; fi
  done
fi

# -- HCCN links (RoCE between servers) ---------------------------------------------------------------------
if [ -z "$hccn" ]; then
  msg="hccn_tool not found: device network (link, health, IP) not checked"
  if [ "$require_npu" -eq 1 ]; then fail "$msg"; else skip "$msg"; fi
else
  declare -A seen_ip=()
  for ((d = 0; d < devices; d++)); do
    link="$("$hccn" -i "$d" -link -g 2>&1 | field 'link status')"
    [ "$link" = "UP" ] && ok "npu $d link UP" || fail "npu $d link '${link:-no answer}' (hccn_tool -i $d -link -g)"
    net="$("$hccn" -i "$d" -net_health -g 2>&1 | field 'net health status')"
    [ "$net" = "Success" ] && ok "npu $d net health Success" || \
      fail "npu $d net health '${net:-no answer}' (hccn_tool -i $d -net_health -g; check the switch and the gateway)"
    ip="$("$hccn" -i "$d" -ip -g 2>&1 | field 'ipaddr')"
    if [[ ! "$ip" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]]; then fail "npu $d has no device IP (hccn_tool -i $d -ip -g)"
    elif [ -n "${seen_ip[$ip]:-}" ]; then fail "npu $d repeats device IP $ip of npu ${seen_ip[$ip]}"
    else seen_ip[$ip]=$d; ok "npu $d device IP $ip"; fi
  done
fi

# -- the master port and the disk -----------------------------------------------------------------------------
py="$(command -v python3 || command -v python || true)"
if [ -n "$py" ]; then
  if "$py" - "$port" <<'PY'
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("", int(sys.argv[1])))
except OSError:
    sys.exit(1)
PY
  then ok "port $port is free for the msrun scheduler"
  else fail "port $port is in use: pick another --master-port"; fi
else
  skip "no python to test port $port"
fi
free_kb="$(df -Pk "$disk_path" | awk 'NR==2 {print $4}')"
free_gb=$((free_kb / 1024 / 1024))
if [ "$free_gb" -ge "$min_free_gb" ]; then ok "disk $disk_path has ${free_gb} GB free (need $min_free_gb)"
else fail "disk $disk_path has ${free_gb} GB free, less than $min_free_gb GB for checkpoints and logs"; fi

if [ "$failed" -ne 0 ]; then echo "$prog: FAILED (see the [FAIL] lines)"; exit 1; fi
echo "$prog: all checks passed"
