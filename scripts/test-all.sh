#!/usr/bin/env bash
# The one command that sets up and runs every test (README "Run all tests"; CI calls exactly this).
# Needs only: the Rust toolchain (stable + nightly via rustup), Python 3.11 with pip, gcc.
# Everything else (maturin, pytest, libcachesim, cargo-fuzz, ...) is installed here.
#
# Environment knobs:
#   WARP_FUZZ_SECONDS   seconds per fuzz target (default 60; 0 skips fuzzing and says so)
#   WARP_SIM_SEEDS      random sim seeds to run with faults besides the fixed ones (default 3)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
venv="${WARP_VENV:-$root/.venv}"
fuzz_seconds="${WARP_FUZZ_SECONDS:-60}"
start_s=$(date +%s)

step() { printf '\n==== [%4ss] %s\n' "$(( $(date +%s) - start_s ))" "$*"; }

step "toolchain components"
rustup component add rustfmt clippy >/dev/null 2>&1 || true

# Created from $PYTHON (default python3.11, else python3); see scripts/venv.sh.
step "python venv and test dependencies ($venv)"
WARP_VENV="$venv" bash scripts/venv.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "ruff and mypy on the Python sources (python/pyproject.toml)"
"$venv/bin/ruff" check --config python/pyproject.toml python/python/warp_cache tests/python tests/typing benches
"$venv/bin/ruff" format --config python/pyproject.toml --check python/python/warp_cache
(cd python && "$venv/bin/mypy" && "$venv/bin/mypy" python/warp_cache/__init__.py)
# What users' type checkers see through the stubs, bound methods included (tests/typing).
(cd python && MYPYPATH=python "$venv/bin/mypy" --strict ../tests/typing)

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

# No free-threaded interpreter, Windows or macOS here: compile and lint those builds
# (python/cross/README.md).
step "other builds: free-threaded (Py_GIL_DISABLED), Windows, macOS: cargo clippy -D warnings"
bash scripts/other-builds.sh

# The PyO3 adapter crate's Rust unit tests link libpython (pyo3's extension-module feature is
# maturin's only), so scripts/test-adapter.sh runs them with the interpreter's library on the
# loader's path; its behaviour as a module is tested through Python by pytest below.
# Real-trace checks read ../shared/traces (or $WARP_CACHE_TRACES); without it they skip, and
# this says so once; with CI=true (the CI job) a missing folder fails them.
traces_dir="${WARP_CACHE_TRACES:-$root/../shared/traces}"
if [ ! -d "$traces_dir" ]; then
  echo "NOTE: real-trace checks skipped: $traces_dir is absent (Rust snapshot/oracle tests skip" \
       "each real trace; pytest lists its skips below with -rs)"
fi
step "cargo test (core, sim, cross-crate tests; INSTA_UPDATE=no)"
INSTA_UPDATE=no cargo test --workspace --exclude warp-cache-python
bash scripts/test-adapter.sh  # the adapter's Rust unit tests: cargo test -p warp-cache-python

# The failpoints feature compiles in test-only hooks (armed only by WARP_CACHE_FAILPOINT or
# _set_failpoint) so the crash tests can stop a process inside the writer lock.
step "build the extension with maturin (release, failpoints for the crash tests) into the venv"
(cd python && VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" "$venv/bin/maturin" develop --release --features failpoints --quiet)

step "pytest under PYTHONMALLOC=debug"
PYTHONMALLOC=debug "$venv/bin/python" -m pytest tests/python -q -rs -p no:cacheprovider

step "type stubs match the module (mypy.stubtest)"
"$venv/bin/python" -m mypy.stubtest warp_cache

# Every other CPython the machine has (pyenv: 3.9, 3.10, 3.12, 3.13): the extension installed
# the way a user installs it (pip install ./python, no failpoints: those tests skip) into a venv
# of its own, then pytest (without PYTHONMALLOC=debug, for time). WARP_PYTHONS overrides the
# list; a version that is not installed is reported and skipped, except under CI=true.
step "pytest on the other Pythons: ${WARP_PYTHONS:-3.9 3.10 3.12 3.13}"
for version in ${WARP_PYTHONS:-3.9 3.10 3.12 3.13}; do
  other=""
  for candidate in "$(pyenv root 2>/dev/null)"/versions/"$version".*/bin/python "$(command -v "python$version" || true)"; do
    if [ -x "$candidate" ]; then other="$candidate"; break; fi
  done
  if [ -z "$other" ]; then
    echo "NOTE: Python $version not found: its pytest run is skipped"
    [ "${CI:-}" = "true" ] && { echo "CI=true: Python $version is required" >&2; exit 1; }
    continue
  fi
  other_venv="$root/.venv-$version"
  [ -x "$other_venv/bin/python" ] || "$other" -m venv "$other_venv"
  "$other_venv/bin/python" -m pip install --quiet --upgrade pip
  "$other_venv/bin/python" -m pip install --quiet "pytest>=8" "pytest-asyncio>=0.23"
  "$other_venv/bin/python" -m pip install --quiet --force-reinstall --no-deps ./python
  echo "-- Python $version ($other)"
  "$other_venv/bin/python" -m pytest tests/python -q -p no:cacheprovider
done

step "simulator smoke: multi-process replay with faults, fixed + ${WARP_SIM_SEEDS:-3} random seeds"
bash scripts/sim-smoke.sh

step "concurrency: shuttle schedules of the stores' locking and the seqlock, loom model of its ordering"
bash scripts/concurrency-tests.sh

step "fuzz smoke: codec, arena, region for ${fuzz_seconds}s each (nightly cargo-fuzz)"
WARP_FUZZ_SECONDS="$fuzz_seconds" bash scripts/fuzz-smoke.sh

step "done in $(( $(date +%s) - start_s ))s"
