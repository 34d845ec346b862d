#!/usr/bin/env bash
# Creates the project's virtual environment once (.venv/ beside this folder) and installs into it what
# is missing: PyTorch first, then huihua itself (editable) with the given extras ("dev": the test
# oracles and linters). A second run finds everything in place and installs nothing.
#
#   HUIHUA_TORCH=cpu|cuda   which PyTorch build to install (default: cuda when `nvidia-smi` sees a GPU,
#                           otherwise cpu, from PyTorch's CPU wheel index with the default index as fallback)
#   HUIHUA_VENV=DIR         where the environment lives (default: .venv in the clone)
#   PYTHON=python3.X        the interpreter that creates it (Python >= 3.11)
#   HUIHUA_SETUP_PLAN=1     print what would be installed and change nothing
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
extras="${1:-}"
venv="${HUIHUA_VENV:-$root/.venv}"
base_python="${PYTHON:-python3}"
torch_version="2.13.0"
cpu_index="https://download.pytorch.org/whl/cpu"
plan="${HUIHUA_SETUP_PLAN:-}"

say() { printf 'huihua setup: %s\n' "$*" >&2; }

torch_build() {
  case "${HUIHUA_TORCH:-auto}" in
    cpu | cuda) printf '%s' "$HUIHUA_TORCH" ;;
    auto)
      if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
        printf cuda
      else
        printf cpu
      fi ;;
    *) say "HUIHUA_TORCH must be cpu or cuda, not '${HUIHUA_TORCH}'"; exit 2 ;;
  esac
}

reachable() {  # whether a package index answers within a few seconds
  "$1" - "$2" <<'PY' 2>/dev/null
import sys, urllib.request
try:
    urllib.request.urlopen(sys.argv[1] + "/torch/", timeout=5)
except Exception:
    sys.exit(1)
PY
}

build="$(torch_build)"
if [ -n "$plan" ]; then
  echo "venv: $venv"
  echo "torch: $build"
  exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
  say "creating the virtual environment $venv (once)"
  if ! "$base_python" -m venv "$venv"; then
    say "could not create a venv with $base_python; on Debian/Ubuntu: apt-get install python3-venv"
    exit 2
  fi
fi
py="$venv/bin/python"
pip=("$py" -m pip install --disable-pip-version-check)

# A stamp records what was installed: the same pyproject.toml and PyTorch build install nothing again
# (any extras' stamp serves the plain install).
want="$("$py" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$root/pyproject.toml") $build"
stamp="$venv/.huihua-setup-${extras:-base}"
installed() {
  local f
  for f in "$venv"/.huihua-setup-*; do
    [ -f "$f" ] || continue
    if [ "$f" = "$stamp" ] || [ -z "$extras" ]; then
      [ "$(cat "$f")" = "$want" ] && return 0
    fi
  done
  return 1
}
if installed && "$py" -c "import torch, huihua" 2>/dev/null; then
  exit 0
fi

if ! "$py" -c "import torch" 2>/dev/null; then
  if [ "$build" = cuda ]; then
    say "installing PyTorch $torch_version, CUDA build (an NVIDIA GPU is present; HUIHUA_TORCH=cpu for the CPU build)"
    "${pip[@]}" "torch==$torch_version"
  elif reachable "$py" "$cpu_index"; then
    say "installing PyTorch $torch_version, CPU build, from $cpu_index (HUIHUA_TORCH=cuda for the CUDA build)"
    "${pip[@]}" "torch==$torch_version" --index-url "$cpu_index"
  else
    say "installing PyTorch $torch_version from the default index ($cpu_index cannot be reached)"
    "${pip[@]}" "torch==$torch_version"
  fi
fi
spec="$root"
[ -n "$extras" ] && spec="$root[${extras}]"
say "installing huihua${extras:+ with [$extras]} and its dependencies"
"${pip[@]}" -e "$spec" >&2
"$py" -c "import torch, huihua"
printf '%s' "$want" > "$stamp"
say "ready: $venv"
