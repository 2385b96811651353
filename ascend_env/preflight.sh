#!/usr/bin/env bash
# Check an Ascend server before a job: the NPUs npu-smi lists (health, free HBM, firmware compatible with the
# driver), the driver, firmware and CANN versions, MindSpore's own run_check on Ascend, HCCN links, the master
# port and the disk.
#   bash ascend_env/preflight.sh [--devices N] [--port 8118] [--disk-path .] [--min-free-gb 50]
#                                [--max-hbm-used 10] [--python PY] [--host-only]
# Prints one line per check ([ OK ], [FAIL], [SKIP]) and exits 1 if any check failed, 2 for bad arguments.
# A host without npu-smi, NPUs or CANN fails: an Ascend job cannot run there. --host-only checks only the host
# (port, disk) and skips the NPU, CANN and MindSpore checks. --devices N fails when npu-smi lists fewer NPUs.
# NPU_SMI and HCCN_TOOL override the tools' paths; --python (or MINDTUNE_PYTHON) the python with MindSpore.
set -u
prog="preflight"
devices=""; port=8118; disk_path="."; min_free_gb=50; max_hbm=10; host_only=0; python="${MINDTUNE_PYTHON:-python3}"
die() { echo "$prog: $*" >&2; exit 2; }
is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }
while [ "$#" -gt 0 ]; do
  case "$1" in
    --devices) devices="${2:-}"; shift 2 || die "--devices needs a value" ;;
    --port) port="${2:-}"; shift 2 || die "--port needs a value" ;;
    --disk-path) disk_path="${2:-}"; shift 2 || die "--disk-path needs a value" ;;
    --min-free-gb) min_free_gb="${2:-}"; shift 2 || die "--min-free-gb needs a value" ;;
    --max-hbm-used) max_hbm="${2:-}"; shift 2 || die "--max-hbm-used needs a value" ;;
    --python) python="${2:-}"; shift 2 || die "--python needs a value" ;;
    --host-only) host_only=1; shift ;;
    --require-npu) shift ;;   # the default now; kept so older job scripts still run
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[ -z "$devices" ] || { is_uint "$devices" && [ "$devices" -ge 1 ] && [ "$devices" -le 16 ]; } || \
  die "--devices must be 1-16, got '$devices'"
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
field() { sed -n "s/^[[:space:]]*$1[[:space:]]*:[[:space:]]*//p" | head -n1 | sed 's/[[:space:]]*$//'; }
hint="an Ascend job cannot run here (--host-only checks only this host)"

ids=()
if [ "$host_only" -eq 1 ]; then
  skip "NPUs, driver, firmware, CANN, MindSpore run_check and HCCN links not checked (--host-only)"
else
  npu_smi="$(find_tool "${NPU_SMI:-}" npu-smi /usr/local/sbin/npu-smi)"
  hccn="$(find_tool "${HCCN_TOOL:-}" hccn_tool /usr/local/Ascend/driver/tools/hccn_tool)"
  # -- NPUs: the ones npu-smi lists (a container may see e.g. only 4-7) ------------------------------------
  if [ -z "$npu_smi" ]; then
    fail "npu-smi not found: no Ascend driver on this host; $hint"
  else
    read -r -a ids <<< "$("$npu_smi" info -l 2>/dev/null | \
      sed -n 's/^[[:space:]]*NPU ID[[:space:]]*:[[:space:]]*\([0-9][0-9]*\).*/\1/p' | tr '\n' ' ')"
    if [ "${#ids[@]}" -eq 0 ]; then fail "npu-smi info -l lists no NPU; $hint"
    elif [ -n "$devices" ] && [ "${#ids[@]}" -lt "$devices" ]; then
      fail "npu-smi lists ${#ids[@]} NPU(s) (${ids[*]}), the job needs $devices"
    else ok "npu-smi lists ${#ids[@]} NPU(s): ${ids[*]}"; fi
    driver="$("$npu_smi" info 2>/dev/null | sed -n 's/.*Version:[[:space:]]*\([^[:space:]|]*\).*/\1/p' | head -n1)"
    [ -n "$driver" ] && ok "driver $driver" || fail "driver version unreadable (npu-smi info)"
    for d in "${ids[@]}"; do
      board="$("$npu_smi" info -t board -i "$d" 2>&1)"
      firmware="$(echo "$board" | field 'Firmware Version')"; compat="$(echo "$board" | field 'Compatibility')"
      if [ -z "$firmware" ]; then fail "npu $d firmware version unreadable (npu-smi info -t board -i $d)"
      elif [ "$compat" != "OK" ]; then fail "npu $d firmware $firmware: driver compatibility '${compat:-?}' (upgrade the firmware to match driver ${driver:-?})"
      else ok "npu $d firmware $firmware, compatible with the driver"; fi
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
  # -- CANN and MindSpore on Ascend ----------------------------------------------------------------------
  cann=""
  for base in ${ASCEND_HOME_PATH:+"$ASCEND_HOME_PATH"} ${ASCEND_TOOLKIT_HOME:+"$ASCEND_TOOLKIT_HOME"} \
              /usr/local/Ascend/ascend-toolkit/latest; do
    info="$(find "$base" -maxdepth 2 -name ascend_toolkit_install.info 2>/dev/null | head -n1)"
    if [ -n "$info" ]; then cann="$(sed -n 's/^version=//p' "$info" | head -n1)"; break; fi
  done
  if [ -n "$cann" ]; then ok "CANN $cann ($info)"
  else fail "CANN toolkit not found (no ascend_toolkit_install.info under \$ASCEND_HOME_PATH or /usr/local/Ascend): install it, then source ascend_env/set_env.sh"; fi
  if ! command -v "$python" >/dev/null 2>&1; then
    fail "python not found ($python): give --python or MINDTUNE_PYTHON for MindSpore's run_check"
  else
    check="$("$python" -c "import mindspore as ms; ms.set_device('Ascend'); ms.run_check()" 2>&1)"
    version="$(echo "$check" | sed -n 's/^MindSpore version:[[:space:]]*//p' | head -n1)"
    if echo "$check" | grep -q "installed on platform \[Ascend\] successfully"; then
      ok "MindSpore ${version:-?} run_check passed on Ascend"
    else
      fail "MindSpore run_check on Ascend failed: $(echo "$check" | grep -v '^[[:space:]]*$' | tail -n1)"
    fi
  fi
  # -- HCCN links (RoCE between servers) of the listed NPUs --------------------------------------------------
  if [ -z "$hccn" ]; then
    fail "hccn_tool not found: device network (link, health, IP) not checked; $hint"
  else
    declare -A seen_ip=()
    for d in "${ids[@]}"; do
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
if [ "$host_only" -eq 1 ]; then echo "$prog: host checks passed (NPUs, CANN and MindSpore not checked: --host-only)"
else echo "$prog: all checks passed"; fi
