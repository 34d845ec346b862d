#!/usr/bin/env bash
# Installs what is missing and paints the prompt with the embedded default model (or --model FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${PYTHON:-python3}" -m huihua generate "$@"
