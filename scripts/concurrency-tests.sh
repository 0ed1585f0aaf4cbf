#!/usr/bin/env bash
# Concurrency gates: the shuttle tests (randomized schedules over the
# production code with the core's locks and atomics swapped for shuttle's) and the loom model
# check of the production seqlock's memory ordering.
#
#   scripts/concurrency-tests.sh           # both, shuttle then loom
#   scripts/concurrency-tests.sh shuttle   # only the shuttle tests (`make shuttle`)
#   scripts/concurrency-tests.sh loom      # only the loom model (`make loom`)
#
# Environment knobs:
#   SHUTTLE_ITERATIONS  schedules per shuttle test (default: each test's own, 5k-20k)
#   SHUTTLE_SEED        seed of the shuttle run (default random, printed); a failure prints the
#                       seed and the command that replays it (see tests/rust/shuttle_util.rs)
#   LOOM_MAX_PREEMPTIONS  bound loom's search (default: unbounded, exhaustive)
#
# Both run in release mode (the search is CPU-bound) without LTO, in their own target
# directories: loom needs RUSTFLAGS="--cfg warp_loom" (a project cfg, so that dependencies with a
# `cfg(loom)` of their own stay as they are), which must not invalidate the normal build,
# and the shuttle feature makes the core's atomics usable only inside shuttle.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
part="${1:-all}"
case "$part" in
  all|shuttle|loom) ;;
  *) echo "concurrency-tests: unknown part '$part' (shuttle, loom or nothing for both)" >&2; exit 2 ;;
esac
base="${CARGO_TARGET_DIR:-$root/target}"
# Release speed, quick builds: the workspace release profile's fat LTO only slows these down.
export CARGO_PROFILE_RELEASE_LTO=false
export CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
start_s=$(date +%s)

if [ "$part" != loom ]; then
  echo "==== shuttle (tests/rust/shuttle_mem.rs, shuttle_seqlock.rs, shuttle_slot_seq.rs)"
  t0=$(date +%s)
  CARGO_TARGET_DIR="$base/shuttle" cargo test -p warp-cache-tests --features shuttle --release \
    --test shuttle_mem --test shuttle_seqlock --test shuttle_slot_seq -- --nocapture --test-threads=1
  echo "shuttle: $(( $(date +%s) - t0 ))s including the build"
fi

if [ "$part" != shuttle ]; then
  echo "==== loom (tests/rust/loom_seqlock.rs, tests/rust/loom_slot_seq.rs)"
  t0=$(date +%s)
  CARGO_TARGET_DIR="$base/loom" RUSTFLAGS="--cfg warp_loom" \
    cargo test -p warp-cache-tests --release --test loom_seqlock --test loom_slot_seq
  echo "loom: $(( $(date +%s) - t0 ))s including the build"
fi

echo "concurrency-tests: done in $(( $(date +%s) - start_s ))s"
