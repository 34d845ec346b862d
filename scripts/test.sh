#!/usr/bin/env bash
# Sets up the project venv with the test oracles (diffusers, transformers) and the linters when needed,
# runs ruff and mypy on huihua/, then the test suite (arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
py="${HUIHUA_VENV:-$PWD/.venv}/bin/python"
# Static checks first (seconds): lint with the bug-finding rule sets, then types. The import-layer
# contract runs inside the suite (tests/test_architecture.py).
"$py" -m ruff check huihua tests/test_architecture.py tests/test_front_door.py
"$py" -m mypy
exec "$py" -m pytest "$@"
