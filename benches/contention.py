"""Shared-backend scaling under contention: N processes against one cache, paired with uncached calls.

Each worker process replays its own Zipf(1.0) stream over 2,000 int keys (a per-process seed)
through one function: `@cache(max_size=1024, backend="shared")` (about 10% of calls miss, so
about 10% write) or the same function uncached. All workers of a run start at one
CLOCK_MONOTONIC instant; the run's aggregate is all their calls divided by the time from that
start to the last worker's stop.

A *round* runs 1, 2 and 4 processes of both kinds back to back; its figure at N processes is

    (shared N-process aggregate / shared 1-process aggregate)
      / (uncached N-process aggregate / uncached 1-process aggregate)

(1.0: the cache scales like code with no cache; uncached code itself gains less than Nx on 2
cores). The report is the median of the rounds, on a quiet machine and again with one
external busy process (`yes > /dev/null`) running, plus the shared N-process aggregate over
the shared 1-process aggregate (never below 1.0 is the target) and the contention counters
the workers read from `cache_info()` of the shared backend, summed over processes.

    python benches/contention.py                  # 9 rounds per state, 1,000,000 calls each
    python benches/contention.py --rounds 3 --calls 200000
    python benches/bench.py --only contention     # the same, as rows of the ratio table

Not a test: it asserts nothing. Needs a release build of the extension.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
PROCESS_COUNTS = (1, 2, 4)
COUNTERS = ("read_retries", "lock_waits")

WORKER = r"""
import os, random, sys, time
sys.path.insert(0, {here!r})
from warp_cache import cache

MODE, SEED, CALLS, GO = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]


def plain(x):
    return x


def zipf(n_keys, n, alpha, seed):
    rng = random.Random(seed)
    weights = [1.0 / (k + 1) ** alpha for k in range(n_keys)]
    return rng.choices(range(n_keys), weights=weights, k=n)


fn = cache(max_size=1024, backend="shared")(plain) if MODE == "shared" else plain
keys = zipf(2000, CALLS, 1.0, SEED)
for k in keys[: CALLS // 10]:  # warm-up: the cache reaches its steady state first
    fn(k)
open(f"{{GO}}.ready.{{os.getpid()}}", "w").close()
while not os.path.exists(GO):
    time.sleep(0.001)
start = float(open(GO).read())
clock = time.monotonic
while clock() < start:
    pass
# The shared backend's counters are cache-wide: the parent takes the earliest "before" and
# the latest "after" of all workers (every worker had warmed up before the start).
before = fn.cache_info() if MODE == "shared" else None
for k in keys:
    fn(k)
stop = clock()
extra = ""
if before is not None:
    after = fn.cache_info()
    fields = ["hits", "misses"] + [f for f in {counters!r} if hasattr(after, f)]
    extra = " ".join(f"{{f}}={{getattr(before, f)}}:{{getattr(after, f)}}" for f in fields)
print(CALLS, stop, extra)
"""


@dataclass
class Run:
    """One run: N processes of one kind."""

    calls_per_s: float
    counters: dict[str, int] = field(default_factory=dict)


def run(mode: str, procs: int, calls: int, tmp: str, seed: int) -> Run:
    """Starts `procs` workers of `mode` (shared or plain) on one fresh cache directory."""
    work = tempfile.mkdtemp(dir=tmp)
    go = os.path.join(work, "go")
    # A script file, not `-c`: code without a file is never shared between processes.
    script = os.path.join(tmp, "contention_worker.py")
    if not os.path.exists(script):
        with open(script, "w") as out:
            out.write(WORKER.format(here=os.path.join(HERE, ".."), counters=COUNTERS))
    env = dict(os.environ, WARP_CACHE_DIR=work)
    ps = [
        subprocess.Popen([sys.executable, script, mode, str(seed + i), str(calls), go], stdout=subprocess.PIPE, env=env, text=True)
        for i in range(procs)
    ]
    # Every worker has imported, built its key stream and warmed up.
    deadline = time.monotonic() + 120
    while sum(name.startswith("go.ready.") for name in os.listdir(work)) < procs:
        if time.monotonic() > deadline or any(p.poll() not in (None, 0) for p in ps):
            for p in ps:
                p.kill()
            raise RuntimeError(f"{mode} contention workers did not get ready")
        time.sleep(0.005)
    start = time.monotonic() + 0.05
    with open(go + ".tmp", "w") as out:
        out.write(repr(start))
    os.rename(go + ".tmp", go)
    outputs = [p.communicate()[0].split() for p in ps]
    if any(p.returncode != 0 for p in ps):
        raise RuntimeError(f"a {mode} contention worker failed")
    total = sum(int(o[0]) for o in outputs)
    last_stop = max(float(o[1]) for o in outputs)
    firsts: dict[str, int] = {}
    lasts: dict[str, int] = {}
    for o in outputs:
        for item in o[2:]:
            name, values = item.split("=")
            first, last = (int(v) for v in values.split(":"))
            firsts[name] = min(firsts.get(name, first), first)
            lasts[name] = max(lasts.get(name, last), last)
    counters = {name: lasts[name] - firsts[name] for name in firsts}
    return Run(total / (last_stop - start), counters)


@dataclass
class StateResult:
    """The rounds of one machine state."""

    state: str
    # Per N (2, 4): the paired figure of each round, and shared N / shared 1 of each round.
    paired: dict[int, list[float]] = field(default_factory=dict)
    shared_gain: dict[int, list[float]] = field(default_factory=dict)
    shared_rate: dict[int, list[float]] = field(default_factory=dict)
    plain_rate: dict[int, list[float]] = field(default_factory=dict)
    counters: dict[int, dict[str, int]] = field(default_factory=dict)


def measure(state: str, rounds: int, calls: int) -> StateResult:
    result = StateResult(state)
    busy = subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) if state == "busy" else None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(rounds):
                shared = {n: run("shared", n, calls, tmp, seed=100 * r) for n in PROCESS_COUNTS}
                plain = {n: run("plain", n, calls, tmp, seed=100 * r) for n in PROCESS_COUNTS}
                for n in PROCESS_COUNTS:
                    result.shared_rate.setdefault(n, []).append(shared[n].calls_per_s)
                    result.plain_rate.setdefault(n, []).append(plain[n].calls_per_s)
                    totals = result.counters.setdefault(n, {})
                    for name, value in shared[n].counters.items():
                        totals[name] = totals.get(name, 0) + value
                    if n == 1:
                        continue
                    gain = shared[n].calls_per_s / shared[1].calls_per_s
                    plain_gain = plain[n].calls_per_s / plain[1].calls_per_s
                    result.shared_gain.setdefault(n, []).append(gain)
                    result.paired.setdefault(n, []).append(gain / plain_gain)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    return result


def report(result: StateResult) -> None:
    print(f"\n## contention, {result.state} machine ({len(result.paired[2])} paired rounds; medians, spread = min..max)")
    for n in PROCESS_COUNTS:
        shared = statistics.median(result.shared_rate[n]) / 1e6
        plain = statistics.median(result.plain_rate[n]) / 1e6
        line = f"  {n} process{'es' if n > 1 else '  '}: shared {shared:6.2f} M calls/s, uncached {plain:6.2f} M calls/s"
        if n > 1:
            paired = result.paired[n]
            gain = result.shared_gain[n]
            line += (
                f"; paired scaling {statistics.median(paired):.2f} ({min(paired):.2f}..{max(paired):.2f})"
                f", shared {n}/1 {statistics.median(gain):.2f}x ({min(gain):.2f}..{max(gain):.2f})"
            )
        print(line)
        counters = result.counters.get(n, {})
        if counters:
            print("      counters over all rounds: " + ", ".join(f"{k} {v:,}" for k, v in counters.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=1_000_000, help="calls per process per run")
    parser.add_argument("--states", default="quiet,busy", help="comma list: quiet, busy")
    args = parser.parse_args()
    for state in args.states.split(","):
        report(measure(state, args.rounds, args.calls))


if __name__ == "__main__":
    main()
