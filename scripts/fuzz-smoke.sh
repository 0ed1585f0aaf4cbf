#!/usr/bin/env bash
# Bounded fuzz run of every cargo-fuzz target (a CI gate): builds the targets on the
# nightly toolchain, runs each for $WARP_FUZZ_SECONDS from a scratch copy of its committed
# seeds and reproducers (the committed corpus never grows by accident), and exits non-zero
# if any target found a crash, a timeout (hang) or an out-of-memory, printing the reproducer.
#
#   scripts/fuzz-smoke.sh                       # 60 s per target
#   WARP_FUZZ_SECONDS=600 scripts/fuzz-smoke.sh # longer
#   WARP_FUZZ_TARGETS="codec" scripts/fuzz-smoke.sh
#
# Environment knobs:
#   WARP_FUZZ_SECONDS    seconds per target (default 60; 0 skips and says so)
#   WARP_FUZZ_TARGETS    targets to run (default: codec arena region)
#   WARP_FUZZ_SANITIZER  cargo-fuzz sanitizer (default none: the targets run safe Rust over heap
#                        memory, and without ASan they execute ~4x more inputs; use "address"
#                        for the cargo-fuzz default)
#
# Reproducers land in fuzz/artifacts/<target>/ (git-ignored). Reproduce with
# `cargo +nightly fuzz run <target> <file>`; once fixed, copy the file into
# corpora/fuzz/regressions/<target>/ so `cargo test` replays it (tests/rust/fuzz_regressions.rs).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
seconds="${WARP_FUZZ_SECONDS:-60}"
targets="${WARP_FUZZ_TARGETS:-codec arena region}"
sanitizer="${WARP_FUZZ_SANITIZER:-none}"

if [ "$seconds" = "0" ]; then
  echo "fuzz-smoke: WARP_FUZZ_SECONDS=0, fuzzing skipped"
  exit 0
fi
case "$seconds" in
  *[!0-9]*) echo "fuzz-smoke: WARP_FUZZ_SECONDS must be a whole number of seconds, got '$seconds'" >&2; exit 2 ;;
esac

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz-smoke: installing the nightly toolchain (cargo-fuzz needs it)"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz-smoke: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

# Debug assertions and overflow checks on. `arena` reads its script bytes modulo small
# ranges, so comparison tracing buys it nothing and costs ~3x executions: it is built without
# it, in its own target directory (other RUSTFLAGS would otherwise rebuild the rest each time).
set_flags() { # sets the array `flags` for target $1
  flags=(-s "$sanitizer" -a)
  if [ "$1" = "arena" ]; then
    flags+=(--no-trace-compares --target-dir "$root/fuzz/target/no-trace-compares")
  fi
}
for t in $targets; do
  set_flags "$t"
  echo "fuzz-smoke: building $t (${flags[*]})"
  cargo +nightly fuzz build "${flags[@]}" "$t"
done

scratch=$(mktemp -d "${TMPDIR:-/tmp}/warp-fuzz-smoke.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

max_len_of() {
  case "$1" in
    region) echo 16384 ;; # whole data files (seeds up to ~11 KB)
    arena) echo 512 ;;    # operation scripts: short ones run faster and shrink better
    *) echo 4096 ;;
  esac
}

failed=()
summary=()
for t in $targets; do
  if [ ! -d "corpora/fuzz/$t" ]; then
    echo "fuzz-smoke: no seed directory corpora/fuzz/$t" >&2
    failed+=("$t (no seeds)")
    continue
  fi
  corpus="$scratch/corpus/$t"
  artifacts="$root/fuzz/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  cp corpora/fuzz/"$t"/* "$corpus"/
  if [ -d "corpora/fuzz/regressions/$t" ]; then
    cp corpora/fuzz/regressions/"$t"/* "$corpus"/ 2>/dev/null || true
  fi
  before=$(find "$artifacts" -type f | sort)
  log="$scratch/$t.log"
  echo "fuzz-smoke: $t for ${seconds}s (corpus: $(ls "$corpus" | wc -l) inputs)"
  set +e
  set_flags "$t"
  cargo +nightly fuzz run "${flags[@]}" "$t" "$corpus" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len="$(max_len_of "$t")" \
    -print_final_stats=1 -artifact_prefix="$artifacts/" >"$log" 2>&1
  rc=$?
  set -e
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  rate=$(grep -o 'exec/s: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  if [ "$rc" -ne 0 ]; then
    echo "fuzz-smoke: $t FAILED (exit $rc). Last lines of the log:" >&2
    tail -n 40 "$log" >&2
    new=$(comm -13 <(echo "$before") <(find "$artifacts" -type f | sort) | grep -v '^$' || true)
    if [ -n "$new" ]; then
      while IFS= read -r file; do
        echo "fuzz-smoke: reproducer: $file" >&2
        echo "  reproduce: cargo +nightly fuzz run ${flags[*]} $t $file" >&2
      done <<<"$new"
    fi
    failed+=("$t")
    summary+=("$t: FAILED after ${execs:-?} executions")
  else
    summary+=("$t: ok, ${execs:-?} executions (${rate:-?} exec/s) in ${seconds}s")
  fi
done

echo
echo "fuzz-smoke summary:"
printf '  %s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz-smoke: failing targets: ${failed[*]}" >&2
  echo "  once fixed, copy each reproducer into corpora/fuzz/regressions/<target>/" >&2
  exit 1
fi
