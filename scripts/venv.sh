#!/usr/bin/env bash
# The Python venv of the tests and tools: creates it if missing, then installs
# tests/python/requirements.txt into it (maturin, pytest, libcachesim, mypy, ruff, ...).
# Used by scripts/test-all.sh and the Makefile, so that both set it up the same way.
#
#   scripts/venv.sh
#
# Environment knobs:
#   WARP_VENV  where the venv lives (default: .venv at the repo root)
#   PYTHON     the interpreter that creates it (default python3.11, else python3)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="${WARP_VENV:-$root/.venv}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -r "$root/tests/python/requirements.txt"
