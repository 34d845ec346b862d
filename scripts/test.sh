#!/usr/bin/env bash
# Installs what is missing (with the test oracles: diffusers, transformers, and the linters), runs ruff and mypy
# on huihua/, then the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
py="${PYTHON:-python3}"
# Static checks first (seconds): lint with the bug-finding rule sets, then types. The import-layer
# contract runs inside the suite (tests/test_architecture.py).
"$py" -m ruff check huihua tests/test_architecture.py
"$py" -m mypy
exec "$py" -m pytest "$@"
