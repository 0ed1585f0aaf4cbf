#!/usr/bin/env bash
# The Rust unit tests of the PyO3 adapter (python/src/**/tests.rs and #[cfg(test)] modules).
# Their binary embeds an interpreter (pyo3's auto-initialize dev-dependency) and so links
# libpython: this puts the LIBDIR of the interpreter pyo3 builds against (as pyo3 picks it:
# $PYO3_PYTHON, else the active venv's, else python3) on the loader's path, so the binary
# loads the libpython it was built against (a pyenv interpreter's libdir is not on the path;
# another libpython3.x of the same name might be). PYO3_PYTHON is not set here: changing it
# would rebuild pyo3 for every other cargo command.
#
#   scripts/test-adapter.sh [cargo test arguments...]
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
if [ -n "${PYO3_PYTHON:-}" ]; then
  python="$PYO3_PYTHON"
elif [ -n "${VIRTUAL_ENV:-}" ]; then
  python="$VIRTUAL_ENV/bin/python"
else
  python=python3
fi
libdir=$("$python" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR") or "")')
LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
  cargo test -p warp-cache-python "$@"
