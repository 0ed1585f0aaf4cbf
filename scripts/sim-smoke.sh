#!/usr/bin/env bash
# Simulator smoke run (a CI gate): the multi-process replay with faults on and
# 4 workers over a committed generated trace (10% of requests forced writes), for
#   * every seed in corpora/sim-seeds/seeds.txt (seeds that once failed),
#   * a few fixed seeds,
#   * WARP_SIM_SEEDS random seeds (default 3; printed, with the command that replays any failure),
# plus one serial run without faults whose every result must equal the reference SIEVE, a
# concurrency stress run without faults (2 workers, long batches, half the requests writes:
# readers and writers meet on hot keys, which catches a missing seqlock validation), and the
# PID-namespace runs (--pid-ns: every worker in a PID namespace of its own, as containers that
# share /dev/shm): the seeds of corpora/sim-seeds/pid-ns.txt and a few fixed ones with faults,
# one without faults where updates hold the writer lock 3 ms (--slow-writes 3), and one with
# faults where the workers see the host's /proc (--pid-ns=host-proc). Where PID namespaces
# are not permitted (not root) these are skipped with the reason.
# Bounded: well under 3 minutes on 2 cores once sim is built.
#
# Environment knobs:
#   WARP_SIM_SEEDS   random seeds to run besides the fixed ones (default 3; 0 skips them)
#   WARP_SIM_OPS     requests replayed per seed (default 6000)
#   WARP_SIM_PID_NS  0 skips the PID-namespace runs (default 1)
#   CARGO_TARGET_DIR where cargo builds (default: target/ at the repo root)
#
# Exit status: 0 if every run passed, else the exit code of the first failure
# (3 correctness, 4 crash, 5 liveness; see `sim --help`).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
random_seeds="${WARP_SIM_SEEDS:-3}"
ops="${WARP_SIM_OPS:-6000}"
trace="corpora/traces/zipf-1.0.txt.gz"
common=(--trace "$trace" --workers 4 --faults --write-fraction 0.1 --ops "$ops")
fixed_seeds=(1 2 3 4 5 6 7 8)
seed_file="corpora/sim-seeds/seeds.txt"

cargo build --release -p sim --quiet
sim="${CARGO_TARGET_DIR:-$root/target}/release/sim"
start_s=$(date +%s)
status=0

# Seeds that once failed (first field of each non-comment line), then the fixed ones.
seeds=()
if [ -f "$seed_file" ]; then
  while read -r seed _; do
    case "$seed" in ''|'#'*) continue ;; esac
    seeds+=("$seed")
  done < "$seed_file"
fi
seeds+=("${fixed_seeds[@]}")

echo "sim smoke: ${common[*]}"
for seed in "${seeds[@]}"; do
  set +e
  out=$("$sim" "${common[@]}" --seed "$seed" 2>&1)
  rc=$?
  set -e
  verdict=$(printf '%s\n' "$out" | sed -n 's/^result *//p')
  recovered=$(printf '%s\n' "$out" | sed -n 's/^  recovery *\([0-9]* of [0-9]* kills recovered\).*within \([0-9.]* ms\).*/\1 (slowest \2)/p')
  wall=$(printf '%s\n' "$out" | sed -n 's/^  wall *//p')
  echo "seed=$seed $verdict; $recovered; $wall"
  if [ "$rc" -ne 0 ]; then
    printf '%s\n' "$out" | sed 's/^/    /'
    echo "  replay: cargo run --release -p sim -- ${common[*]} --seed $seed"
    [ "$status" -ne 0 ] || status=$rc
  fi
done

echo "sim smoke: serial schedule, no faults: every result must equal the reference SIEVE"
set +e
out=$("$sim" --trace corpora/traces/mixed.txt.gz --workers 3 --serial --ops 20000 --seed 11 2>&1)
rc=$?
set -e
printf '%s\n' "$out" | grep -E '^(seed=|checks|result)' | sed 's/^/  /'
if [ "$rc" -ne 0 ]; then
  printf '%s\n' "$out" | sed 's/^/    /'
  [ "$status" -ne 0 ] || status=$rc
fi

echo "sim smoke: concurrency stress (no faults): 2 workers, batches up to 2000, 50% writes"
set +e
"$sim" --trace "$trace" --workers 2 --batch-max 2000 --write-fraction 0.5 --seeds 3 --seed 100
rc=$?
set -e
[ "$rc" -eq 0 ] || [ "$status" -ne 0 ] || status=$rc

# One replay per line of output: verdict, lock takeovers, wall time; the whole report on failure.
pid_ns_run() {
  local out rc verdict lock wall
  set +e
  out=$("$sim" "$@" 2>&1)
  rc=$?
  set -e
  verdict=$(printf '%s\n' "$out" | sed -n 's/^result *//p' | cut -c1-160)
  lock=$(printf '%s\n' "$out" | sed -n 's/^  lock *\([0-9]* writer-lock takeovers ([0-9]* workers killed\).*/\1)/p')
  wall=$(printf '%s\n' "$out" | sed -n 's/^  wall *//p')
  echo "  ${*: -2} $verdict; $lock; $wall"
  if [ "$rc" -ne 0 ]; then
    printf '%s\n' "$out" | sed 's/^/    /'
    echo "  replay: cargo run --release -p sim -- $*"
    [ "$status" -ne 0 ] || status=$rc
  fi
}

if [ "${WARP_SIM_PID_NS:-1}" != 0 ]; then
  pid_ns_seed_file="corpora/sim-seeds/pid-ns.txt"
  pid_ns_common=(--trace "$trace" --workers 4 --faults --pid-ns --write-fraction 0.1 --ops "$ops")
  set +e
  probe=$("$sim" --trace "$trace" --workers 1 --pid-ns --ops 10 --seed 1 2>&1)
  probe_rc=$?
  set -e
  if [ "$probe_rc" -ne 0 ] && printf '%s\n' "$probe" | grep -q -- '--pid-ns: cannot'; then
    echo "sim smoke: PID-namespace runs skipped: $(printf '%s\n' "$probe" | grep -- '--pid-ns: cannot' | head -1)"
  else
    pid_ns_seeds=()
    while read -r seed _; do
      case "$seed" in ''|'#'*) continue ;; esac
      pid_ns_seeds+=("$seed")
    done < "$pid_ns_seed_file"
    pid_ns_seeds+=(2 3)
    echo "sim smoke: one PID namespace per worker: ${pid_ns_common[*]}"
    for seed in "${pid_ns_seeds[@]}"; do
      pid_ns_run "${pid_ns_common[@]}" --seed "$seed"
    done
    echo "sim smoke: one PID namespace per worker, no faults, updates hold the lock 3 ms"
    pid_ns_run --trace "$trace" --workers 4 --pid-ns --write-fraction 0.1 --slow-writes 3 --ops 5000 --seed 3
    echo "sim smoke: one PID namespace per worker seeing the host's /proc, faults"
    pid_ns_run --trace "$trace" --workers 4 --faults --pid-ns=host-proc --write-fraction 0.1 --ops "$ops" --seed 7
  fi
fi

if [ "$random_seeds" -gt 0 ]; then
  echo "sim smoke: $random_seeds random seeds"
  set +e
  "$sim" "${common[@]}" --seeds "$random_seeds"
  rc=$?
  set -e
  if [ "$rc" -ne 0 ]; then
    echo "  a random seed failed: add it to $seed_file with a comment once understood"
    [ "$status" -ne 0 ] || status=$rc
  fi
fi

echo "sim smoke: done in $(( $(date +%s) - start_s ))s, status $status"
exit "$status"
