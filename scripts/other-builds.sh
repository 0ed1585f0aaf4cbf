#!/usr/bin/env bash
# Compile and lint the builds this machine cannot run (python/cross/README.md): the adapter's
# free-threaded (Py_GIL_DISABLED) variant, and the core + adapter for Windows and macOS.
# `cargo clippy -D warnings` against interpreters described by PYO3_CONFIG_FILE; nothing runs.
#
# A cross target whose standard library cannot be installed (`rustup target add` needs the Rust
# distribution server) is reported as NOT CHECKED, loudly, and the script goes on.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
base="${CARGO_TARGET_DIR:-$root/target}"

echo "==== free-threaded CPython 3.13t (cfg Py_GIL_DISABLED), $(rustc -vV | sed -n 's/^host: //p')"
PYO3_CONFIG_FILE="$root/python/cross/free-threaded-3.13t.txt" CARGO_TARGET_DIR="$base/free-threaded" \
  cargo clippy -p warp-cache-python --all-targets -- -D warnings

unchecked=()
for target in x86_64-pc-windows-gnu x86_64-apple-darwin; do
  echo "==== $target (CPython 3.11)"
  if ! rustup target list --installed | grep -qx "$target" && ! rustup target add "$target"; then
    unchecked+=("$target")
    echo "NOT CHECKED: the standard library for $target could not be installed"
    continue
  fi
  PYO3_CONFIG_FILE="$root/python/cross/cpython-3.11.txt" CARGO_TARGET_DIR="$base/cross" \
    cargo clippy --target "$target" -p warp-cache-core -p warp-cache-python -- -D warnings
done
if [ ${#unchecked[@]} -gt 0 ]; then
  echo "other-builds: NOT CHECKED: ${unchecked[*]}"
else
  echo "other-builds: free-threaded, Windows and macOS builds compile and are lint-clean"
fi
