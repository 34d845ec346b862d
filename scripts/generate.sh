#!/usr/bin/env bash
# Sets up the project venv when needed (scripts/setup.sh) and paints the prompt with the embedded default
# model (or --model FILE). Runs from any folder: paths you give (-o, --model) are relative to where you are.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bash "$here/setup.sh"
venv="${HUIHUA_VENV:-$here/../.venv}"
exec "$venv/bin/huihua" generate "$@"
