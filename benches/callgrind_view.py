"""Instruction-count view of warp_cache's hot paths against functools.lru_cache (callgrind).

Wall-clock timings on a shared machine are noisy; instruction counts are repeatable. For each
workload this runs the driver below twice under `valgrind --tool=callgrind` (with 0 and with
N timed calls), subtracts, and prints instructions per call and the functions they go to
(exclusive, i.e. self cost; `--inclusive` for inclusive). Interpreter startup, imports and
cache warm-up cancel out in the subtraction.

    python benches/callgrind_view.py                      # all workloads, both caches
    python benches/callgrind_view.py --workloads hit1,miss128 --top 25
    python benches/callgrind_view.py --cachegrind         # + simulated cache misses per call

Needs valgrind (callgrind_annotate, cg_annotate) and a release build of the extension
(`maturin develop --release -m python/Cargo.toml`, or a wheel built with `maturin build
--release`). Build with `CARGO_PROFILE_RELEASE_DEBUG=line-tables-only` to get file:line in
`callgrind_annotate --auto=yes` listings.

Workloads (the rows of benches/bench.py):
  hit1     pure hit, one int argument (100 hot keys, max_size=128)
  hit2     pure hit, two positional args (max_size=256)
  kw       pure hit, one positional + one keyword argument (max_size=256)
  miss128  all-miss at max_size=128 (sequential int keys, every call evicts)
  miss1e6  all-miss at max_size=1,000,000 (same loop; compare with miss128: O(1) eviction)
  zipf     Zipf(1.0) over 2000 keys, max_size=256
  shit1    shared backend (`backend="shared"`), pure hit, one int argument (as hit1, size 256);
           the cache files go to a temporary WARP_CACHE_DIR
  szipf    shared backend, Zipf(1.0) over 2000 keys, max_size=256
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

WORKLOADS = ("hit1", "hit2", "kw", "miss128", "miss1e6", "zipf", "shit1", "szipf")
ZIPF_KEYS = 200_000
# The simulated caches, given explicitly: valgrind's autodetection on this VM reports a 320 MiB
# direct-mapped L3. These are the machine's (lscpu): 32 KiB 8-way L1d per core, 32 MiB 16-way L3.
# The simulation has no hardware prefetcher, so it counts sequential streams as misses too.
CACHES = ["--I1=32768,8,64", "--D1=32768,8,64", "--LL=33554432,16,64"]


# --------------------------------------------------------------------------- driver (under valgrind)
def driver(contender: str, workload: str, n: int) -> None:
    import functools
    import gc
    import random

    from warp_cache import cache

    def identity(x):
        return x

    def pair(a, b=0):
        return a + b

    shared = workload.startswith("s")
    size = {"miss1e6": 1_000_000, "zipf": 256, "hit2": 256, "kw": 256, "shit1": 256, "szipf": 256}.get(workload, 128)
    func = pair if workload in ("hit2", "kw") else identity
    if contender == "lru":
        fn = functools.lru_cache(maxsize=size)(func)
    elif shared:
        # Never the user's real cache directory; a fresh one per run (no entries left over).
        os.environ["WARP_CACHE_DIR"] = tempfile.mkdtemp(prefix="warp-cg-")
        fn = cache(max_size=size, backend="shared")(func)
    else:
        fn = cache(max_size=size)(func)
    workload = workload[1:] if shared else workload

    if workload in ("hit1", "hit2", "kw"):
        keys = (list(range(100)) * (n // 100 + 1))[:n]
        warm = range(100)
    elif workload.startswith("miss"):
        warm = range(-size, 0)
        keys = list(range(10**9, 10**9 + n))
    else:
        # A fixed number of keys whatever n is, so that generating them cancels out.
        rng = random.Random(7)
        weights = [1.0 / r for r in range(1, 2001)]
        all_keys = rng.choices(range(2000), weights=weights, k=ZIPF_KEYS + 50_000)
        warm, keys = all_keys[ZIPF_KEYS:], all_keys[:n]

    def call_all(fn, keys):
        if workload == "hit2":
            for k in keys:
                fn(k, 1)
        elif workload == "kw":
            for k in keys:
                fn(k, b=1)
        else:
            for k in keys:
                fn(k)

    call_all(fn, warm)
    gc.disable()
    call_all(fn, keys)
    info = fn.cache_info()
    if shared and contender != "lru":
        import shutil

        shutil.rmtree(os.environ["WARP_CACHE_DIR"], ignore_errors=True)
    print(f"done hits={info.hits} misses={info.misses}")


# --------------------------------------------------------------------------- runner
LINE = re.compile(r"\s*([\d,]+) \([^)]*\)\s+(\S.*)$")


def run_valgrind(tool_args: list[str], out_file: str, contender: str, workload: str, n: int) -> None:
    cmd = ["valgrind", *tool_args, f"--{tool_args[0].split('=')[1]}-out-file={out_file}"]
    cmd += [sys.executable, os.path.abspath(__file__), "--driver", contender, workload, str(n)]
    # A fixed string-hash seed: the interpreter's own dict probes then repeat exactly.
    env = dict(os.environ, PYTHONHASHSEED="0")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0 or "done hits=" not in proc.stdout:
        sys.exit(f"valgrind run failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")


def annotate(path: str, inclusive: bool) -> dict[str, int]:
    out = subprocess.run(
        ["callgrind_annotate", f"--inclusive={'yes' if inclusive else 'no'}", "--threshold=100", path],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    costs: dict[str, int] = {}
    for line in out.splitlines():
        m = LINE.match(line)
        if not m or " => " in line:
            continue
        name = re.sub(r" \[.*\]$", "", m.group(2))
        if ":" in name and name.startswith(("/", ".")):
            name = name.split(":", 1)[1]
        costs[name] = costs.get(name, 0) + int(m.group(1).replace(",", ""))
    return costs


def cachegrind_summary(path: str) -> dict[str, int]:
    events = summary = None
    with open(path) as f:
        for line in f:
            if line.startswith("events:"):
                events = line.split()[1:]
            elif line.startswith("summary:"):
                summary = [int(x) for x in line.split()[1:]]
    return dict(zip(events or [], summary or []))


def profile(contender: str, workload: str, n: int, top: int, inclusive: bool, cachegrind: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for count in (0, n):
            path = os.path.join(tmp, f"cg.{count}.out")
            run_valgrind(["--tool=callgrind"], path, contender, workload, count)
            files.append(path)
        base, full = (annotate(p, inclusive) for p in files)
        per_call = {k: (full.get(k, 0) - base.get(k, 0)) / n for k in set(base) | set(full)}
        total = per_call.pop("PROGRAM TOTALS", 0.0)
        name = "functools.lru_cache" if contender == "lru" else "warp_cache"
        print(f"\n## {workload}: {name}: {total:.0f} instructions per call (loop included)")
        shown = sorted(per_call.items(), key=lambda kv: -kv[1])[:top]
        for func, cost in shown:
            if cost >= 1:
                print(f"  {cost:8.1f}  {func[:120]}")
        if cachegrind:
            sims = []
            for count in (0, n):
                path = os.path.join(tmp, f"cachegrind.{count}.out")
                run_valgrind(
                    ["--tool=cachegrind", "--cache-sim=yes", "--branch-sim=yes", *CACHES], path, contender, workload, count
                )
                sims.append(cachegrind_summary(path))
            d = {k: (sims[1][k] - sims[0][k]) / n for k in sims[0]}
            print(
                f"  simulated per call: branch mispredicts {d.get('Bcm', 0) + d.get('Bim', 0):.2f}, "
                f"D1 misses {d.get('D1mr', 0) + d.get('D1mw', 0):.2f}, "
                f"last-level misses {d.get('DLmr', 0) + d.get('DLmw', 0):.2f}"
            )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--driver":
        driver(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma list of: " + ", ".join(WORKLOADS))
    parser.add_argument("--contenders", default="lru,warp", help="comma list of: lru, warp")
    parser.add_argument("--calls", type=int, default=100_000, help=f"timed calls per run (at most {ZIPF_KEYS})")
    parser.add_argument("--top", type=int, default=15, help="functions shown per run")
    parser.add_argument("--inclusive", action="store_true", help="inclusive costs (callees included)")
    parser.add_argument("--cachegrind", action="store_true", help="also simulate caches and branches")
    args = parser.parse_args()
    if not 0 < args.calls <= ZIPF_KEYS:
        sys.exit(f"--calls must be in 1..{ZIPF_KEYS}")
    for workload in filter(None, args.workloads.split(",")):
        if workload not in WORKLOADS:
            sys.exit(f"unknown workload {workload!r}; choose from {', '.join(WORKLOADS)}")
        for contender in filter(None, args.contenders.split(",")):
            profile(contender, workload, args.calls, args.top, args.inclusive, args.cachegrind)


if __name__ == "__main__":
    main()
