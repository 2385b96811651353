#!/usr/bin/env bash
# Rank-table tools (HCCL v1.0 tables): see mindtune/launch/ranktable.py.
#   bash ascend_env/ranktable.sh generate OUT.json --server-id THIS_SERVER_IP [--devices 0-7]   (runs hccn_tool)
#   bash ascend_env/ranktable.sh merge ALL.json SERVER0.json SERVER1.json ...
#   bash ascend_env/ranktable.sh convert jobstart_hccl.json OUT.json                            (ModelArts v0.1)
#   bash ascend_env/ranktable.sh validate TABLE.json
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exec "${MINDTUNE_PYTHON:-python3}" -m mindtune.launch.ranktable "$@"
