#!/usr/bin/env bash
# Installs what is missing into the current Python: the CPU build of PyTorch first (pinned, so pip
# never pulls a multi-GB CUDA wheel), then huihua itself (editable) with the given extras.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
py="${PYTHON:-python3}"
if ! "$py" -c "import torch" 2>/dev/null; then
  "$py" -m pip install -q --disable-pip-version-check "torch==2.13.0"
fi
spec="."
[ -n "$extras" ] && spec=".[${extras}]"
"$py" -m pip install -q --disable-pip-version-check -e "$spec"
