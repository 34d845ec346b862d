#!/usr/bin/env bash
# Installs what is missing and paints the prompt with the embedded default model (or --model FILE).
# Paths you give (-o, --model) are relative to the folder you run it from.
set -euo pipefail
bash "$(dirname "$0")/setup.sh"
exec "${PYTHON:-python3}" -m huihua generate "$@"
