#!/usr/bin/env bash
# Installs what is missing (with the test oracles: diffusers, transformers) and runs the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
exec "${PYTHON:-python3}" -m pytest "$@"
