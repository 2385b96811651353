#!/usr/bin/env bash
# Ascend environment for mindtune. Source it (it exports variables into your shell):
#   source ascend_env/set_env.sh [--profile 910a|910b|auto] [--quiet]
# or print the exports:  bash ascend_env/set_env.sh --print [--profile ...]
#
# 1. Finds CANN under its usual install paths ($ASCEND_HOME_PATH, $ASCEND_TOOLKIT_HOME, /usr/local/Ascend/
#    ascend-toolkit/latest, /usr/local/Ascend/latest, /usr/local/Ascend/nnae/latest, $HOME/Ascend/...) and sources
#    its set_env.sh (PATH, LD_LIBRARY_PATH, PYTHONPATH of the toolkit).
# 2. Applies the profile files profiles/common.env and profiles/<910a|910b>.env (HCCL and MindSpore variables).
#    auto reads the chip name from npu-smi. Variables already set in your environment win over the profile.
# On a machine without CANN (a CPU machine) it says so and changes nothing. It never exits your shell.

_mt_main() {
  local profile="auto" quiet=0 print=0 here cann="" f name
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  while [ "$#" -gt 0 ]; do
    case "$1" in
      --profile) [ -n "${2:-}" ] || { echo "set_env: --profile needs 910a, 910b or auto" >&2; return 2; }
                 profile="$2"; shift 2 ;;
      --quiet) quiet=1; shift ;;
      --print) print=1; shift ;;
      -h|--help) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; return 0 ;;
      *) echo "set_env: unknown option $1 (--profile 910a|910b|auto, --quiet, --print)" >&2; return 2 ;;
    esac
  done
  case "$profile" in 910a|910b|auto) ;; *) echo "set_env: unknown profile '$profile' (910a, 910b, auto)" >&2; return 2 ;; esac
  _mt_say() { [ "$quiet" -eq 1 ] || echo "set_env: $*" >&2; }

  for f in ${ASCEND_HOME_PATH:+"$ASCEND_HOME_PATH/../set_env.sh" "$ASCEND_HOME_PATH/set_env.sh"} \
           ${ASCEND_TOOLKIT_HOME:+"$ASCEND_TOOLKIT_HOME/../set_env.sh"} \
           /usr/local/Ascend/ascend-toolkit/set_env.sh /usr/local/Ascend/ascend-toolkit/latest/set_env.sh \
           /usr/local/Ascend/latest/set_env.sh /usr/local/Ascend/nnae/set_env.sh \
           "$HOME/Ascend/ascend-toolkit/set_env.sh"; do
    if [ -f "$f" ]; then cann="$f"; break; fi
  done
  if [ -z "$cann" ]; then
    _mt_say "CANN not found (looked in \$ASCEND_HOME_PATH, \$ASCEND_TOOLKIT_HOME, /usr/local/Ascend, \$HOME/Ascend);" \
            "no Ascend variables set. Fine on a CPU machine; on an NPU server install CANN or set ASCEND_HOME_PATH."
    return 0
  fi

  if [ "$profile" = "auto" ]; then
    name="$(npu-smi info 2>/dev/null | grep -o -m1 '910[A-Za-z0-9]*' || true)"
    case "$name" in 910B*|910b*) profile=910b ;; 910*) profile=910a ;;
      *) profile=910b; _mt_say "npu-smi did not name the chip; assuming 910b (use --profile 910a|910b)" ;; esac
  fi

  local exports=() line key value
  for f in "$here/profiles/common.env" "$here/profiles/$profile.env"; do
    while IFS= read -r line || [ -n "$line" ]; do
      case "$line" in ''|'#'*) continue ;; esac
      key="${line%%=*}"; value="${line#*=}"
      # the user's own settings win
      if [ -z "${!key+x}" ]; then exports+=("$key=$value"); fi
    done < "$f"
  done
  if [ "$print" -eq 1 ]; then
    echo "source $cann"
    for line in "${exports[@]}"; do echo "export ${line%%=*}=$(printf '%q' "${line#*=}")"; done
    return 0
  fi
  # shellcheck disable=SC1090
  source "$cann" || { echo "set_env: sourcing $cann failed" >&2; return 1; }
  for line in "${exports[@]}"; do export "$line"; done
  _mt_say "CANN from $cann; profile $profile (${#exports[@]} variables)"
  return 0
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  _mt_main "$@"; exit $?
else
  _mt_main "$@"
fi
