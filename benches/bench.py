"""warp_cache benchmark: throughput and memory as ratios to functools.lru_cache in one run.

Not a test: it asserts nothing and never gates CI. Run it on a quiet machine with a release
build of the extension:

    (cd python && maturin develop --release) && python benches/bench.py [--repeats 7] [--quick]

Every row times the same call loop for each contender, `--repeats` times, interleaved so that
machine noise hits every contender alike, and prints the median throughput, the spread
(min..max of the per-repeat ratio) and the ratio of medians to `functools.lru_cache`. The run
ends with the targets' summary (docs/performance.md): one line per target with the median of the per-repeat ratios,
their spread and whether the target is met. The load average is printed before and after: on
a shared machine, quote medians of repeats and the spread.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))


# --------------------------------------------------------------------------- contenders
def contenders(max_size: int) -> dict[str, Callable[[Callable], Callable]]:
    """Decorator factories for every cache we compare against, keyed by display name."""
    from warp_cache import cache

    out: dict[str, Callable[[Callable], Callable]] = {
        "lru_cache": functools.lru_cache(maxsize=max_size),
        "warp_cache": cache(max_size=max_size),
    }
    try:
        import cachetools

        out["cachetools"] = lambda fn: cachetools.cached(cachetools.LRUCache(maxsize=max_size))(fn)
    except ImportError:
        pass
    try:
        import cachebox

        out["cachebox"] = lambda fn: cachebox.cached(cachebox.LRUCache(maxsize=max_size))(fn)
    except ImportError:
        pass
    try:
        import moka_py

        out["moka-py"] = lambda fn: moka_py.cached(maxsize=max_size)(fn)
    except ImportError:
        pass
    return out


def identity(x):
    return x


def pair(a, b=0):
    return a + b


def zipf_keys(n_keys: int, n_requests: int, alpha: float, seed: int) -> list[int]:
    rng = random.Random(seed)
    weights = [1.0 / (rank**alpha) for rank in range(1, n_keys + 1)]
    return rng.choices(range(n_keys), weights=weights, k=n_requests)


# --------------------------------------------------------------------------- timing
@dataclass
class Row:
    name: str
    target: str
    ops_per_s: dict[str, float]
    ratios: dict[str, list[float]]
    baseline: str = "lru_cache"
    note: str = ""
    # The contender the target is about and the ratio it must reach (None: report only);
    # `lower_is_better` flips the comparison (bytes per entry).
    subject: str = "warp_cache"
    goal: float | None = None
    lower_is_better: bool = False
    # Rows whose values are ratios already (the contention figures), not calls per second.
    ratio_only: bool = False


def time_loop(fn: Callable, calls: Callable[[Callable], None], n_ops: int) -> float:
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        calls(fn)
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
    return n_ops / elapsed


def compare(
    name: str,
    target: str,
    make: dict[str, Callable[[], Callable]],
    calls: Callable[[Callable], None],
    n_ops: int,
    repeats: int,
    warm: Callable[[Callable], None] | None = None,
    baseline: str = "lru_cache",
    subject: str = "warp_cache",
    goal: float | None = None,
) -> Row:
    """Times `calls(fn)` for each contender `repeats` times, interleaved."""
    samples: dict[str, list[float]] = {k: [] for k in make}
    for _ in range(repeats):
        for label, factory in make.items():
            fn = factory()
            if warm is not None:
                warm(fn)
            samples[label].append(time_loop(fn, calls, n_ops))
    medians = {k: statistics.median(v) for k, v in samples.items()}
    ratios = {k: [a / b for a, b in zip(v, samples[baseline])] for k, v in samples.items()}
    return Row(name, target, medians, ratios, baseline, subject=subject, goal=goal)


def print_row(row: Row) -> None:
    base = row.ops_per_s[row.baseline]
    print(f"\n## {row.name}   (target: {row.target})")
    for label, ops in row.ops_per_s.items():
        ratio = ops / base
        if row.ratio_only:
            spread = row.ratios[label]
            print(f"  {label:<22} x{ratio:5.2f} vs {row.baseline}   (per-round {min(spread):.2f}..{max(spread):.2f})")
            continue
        spread = row.ratios[label]
        print(
            f"  {label:<22} {ops / 1e6:8.3f} M ops/s   x{ratio:5.2f} vs {row.baseline}"
            f"   (per-repeat {min(spread):.2f}..{max(spread):.2f})"
        )
    if row.note:
        print(f"  note: {row.note}")


def print_summary(rows: list[Row]) -> None:
    """The targets' table: median of the per-repeat ratios of each row's subject, the spread."""
    print("\n## summary (performance targets; ratio = median of per-repeat ratios, spread = min..max)")
    print(f"  {'workload':<60} {'target':>8} {'ratio':>7}  {'spread':<11}  result")
    for row in rows:
        if row.subject not in row.ratios:
            continue
        ratios = row.ratios[row.subject]
        median = statistics.median(ratios)
        if row.goal is None:
            verdict = "(report)"
        elif row.lower_is_better:
            verdict = "met" if median <= row.goal else "MISSED"
        else:
            verdict = "met" if median >= row.goal else "MISSED"
        sign = "<=" if row.lower_is_better else ">="
        target = f"{sign}{row.goal:.2f}" if row.goal is not None else "-"
        print(f"  {row.name[:60]:<60} {target:>8} {median:7.2f}  {min(ratios):.2f}..{max(ratios):<5.2f}  {verdict}")


# --------------------------------------------------------------------------- workloads
def memory_rows(repeats: int, n: int) -> list[Row]:
    rows = []
    hot = list(range(100)) * (n // 100)

    def hits(fn):
        for k in hot:
            fn(k)

    make = {k: (lambda d=d: d(identity)) for k, d in contenders(128).items()}
    rows.append(compare("memory, pure hit, one int argument", ">= 1.25x", make, hits, len(hot), repeats, warm=hits, goal=1.25))

    def hits2(fn):
        for k in hot:
            fn(k, 1)

    def hits_kw(fn):
        for k in hot:
            fn(k, b=1)

    make2 = {k: (lambda d=d: d(pair)) for k, d in contenders(256).items()}
    rows.append(compare("memory, pure hit, two args", ">= 1.0x", make2, hits2, len(hot), repeats, warm=hits2, goal=1.0))
    rows.append(compare("memory, pure hit, one kwarg", ">= 1.0x", make2, hits_kw, len(hot), repeats, warm=hits_kw, goal=1.0))

    counter = iter(range(10**12))

    def misses(fn):
        base = next(counter) * n
        for k in range(base, base + n):
            fn(k)

    rows.append(compare("memory, all-miss at max_size=128", ">= 1.0x", make, misses, n, repeats, goal=1.0))

    zipf = zipf_keys(2000, n, 1.0, seed=7)

    def zipf_calls(fn):
        for k in zipf:
            fn(k)

    make_z = {k: (lambda d=d: d(identity)) for k, d in contenders(256).items()}
    rows.append(compare("memory, Zipf(1.0) over 2000 keys, size 256", ">= 1.2x", make_z, zipf_calls, n, repeats, goal=1.2))
    return rows


def big_miss_rows(repeats: int, n: int) -> list[Row]:
    """Miss path (with eviction) at max_size=1,000,000 vs 128: both caches full, then misses.

    The target row is warp_cache on sequential int keys (the loop the issue names). The other
    rows are context, not targets: the same ratio for `functools.lru_cache`, and both caches
    on random keys, where every miss touches memory at random whatever the cache does.
    """
    from warp_cache import cache

    big = 1_000_000
    counter = iter(range(1, 10**9))
    rng = random.Random(3)

    def fill(fn, size):
        for k in range(-size, 0):
            fn(k)

    def sequential(fn):
        base = next(counter) * 10 * n
        for k in range(base, base + n):
            fn(k)

    makers = {
        "warp_cache": lambda size: cache(max_size=size)(identity),
        "lru_cache": lambda size: functools.lru_cache(maxsize=size)(identity),
    }
    labels = (("max_size=128", 128), ("max_size=1,000,000", big))
    rows = []
    for pattern in ("sequential", "random"):
        for who, make in makers.items():
            samples: dict[str, list[float]] = {label: [] for label, _ in labels}
            for _ in range(repeats):
                keys = [rng.randrange(10**15) for _ in range(n)] if pattern == "random" else None

                def random_keys(fn, keys=keys):
                    for k in keys:
                        fn(k)

                for label, size in labels:
                    fn = make(size)
                    fill(fn, size)
                    samples[label].append(time_loop(fn, sequential if keys is None else random_keys, n))
                    del fn
            medians = {k: statistics.median(v) for k, v in samples.items()}
            ratios = {k: [a / b for a, b in zip(v, samples["max_size=128"])] for k, v in samples.items()}
            is_target = who == "warp_cache" and pattern == "sequential"
            rows.append(
                Row(
                    f"{who}: miss+evict, 1e6 vs 128 entries, {pattern} keys",
                    "within 20% (>= 0.8x)" if is_target else "(context)",
                    medians,
                    ratios,
                    "max_size=128",
                    subject="max_size=1,000,000",
                    goal=0.8 if is_target else None,
                )
            )
    return rows


def threads_row(repeats: int, n: int) -> Row:
    """8 threads, Zipf: warp_cache (no user lock) vs lru_cache guarded by a threading.Lock."""
    from warp_cache import cache

    zipf = zipf_keys(2000, n, 1.0, seed=11)
    threads = 8

    def locked_lru():
        inner = functools.lru_cache(maxsize=256)(identity)
        lock = threading.Lock()

        def call(x):
            with lock:
                return inner(x)

        return call

    make = {"lru_cache+Lock": locked_lru, "warp_cache": lambda: cache(max_size=256)(identity)}

    def run(fn):
        def worker():
            for k in zipf:
                fn(k)

        ts = [threading.Thread(target=worker) for _ in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    return compare("8 threads, Zipf over 2000 keys, size 256", ">= 2.0x", make, run, n * threads, repeats, baseline="lru_cache+Lock", goal=2.0)


def async_row(repeats: int, n: int) -> Row:
    """Awaits per second of a cached async hit vs a plain `async def` returning a constant."""
    from warp_cache import cache

    async def plain(x):
        return 1

    def make_cached():
        @cache(max_size=128)
        async def cached(x):
            return 1

        return cached

    def run(fn):
        async def main():
            for _ in range(n):
                await fn(1)

        asyncio.run(main())

    warm = run
    return compare("async hit vs plain async def", ">= 0.5x", {"plain async def": lambda: plain, "warp_cache": make_cached}, run, n, repeats, warm=warm, baseline="plain async def", goal=0.5)


SHARED_WORKER = r"""
import os, sys, time
sys.path.insert(0, {here!r})
from warp_cache import cache

@cache(max_size=256, backend="shared")
def bench_shared_identity(x):
    return x

def main():
    fn = bench_shared_identity
    keys = list(range(100)) * 10
    for k in keys:
        fn(k)
    # Wait for the go-file; it holds the common start time (CLOCK_MONOTONIC, the same clock in
    # every process) and the window's length in seconds.
    go = {barrier!r}
    while not os.path.exists(go):
        time.sleep(0.001)
    while True:
        text = open(go).read().split()
        if len(text) == 2:
            break
    start, window_s = float(text[0]), float(text[1])
    while time.monotonic() < start:
        pass
    stop = start + window_s
    calls = 0
    clock = time.monotonic
    while True:
        for k in keys:
            fn(k)
        calls += len(keys)
        now = clock()
        if now >= stop:
            break
    # Calls made and when this process stopped: the parent divides all calls by the window
    # from the common start to the last stop, so processes that did not overlap count once.
    print(calls, now)

main()
"""


def shared_rows(repeats: int, n: int) -> list[Row]:
    from warp_cache import cache

    rows = []
    hot = list(range(100)) * (n // 100)

    def hits(fn):
        for k in hot:
            fn(k)

    with tempfile.TemporaryDirectory() as tmp:
        # Never the user's real cache directory (also not for the probe).
        os.environ["WARP_CACHE_DIR"] = tmp
        try:
            probe = cache(max_size=8, backend="shared")(identity)
            probe(1)
        except Exception as exc:  # the backend may not exist on this platform/build
            os.environ.pop("WARP_CACHE_DIR", None)
            return [Row("shared backend", "-", {"lru_cache": 1.0}, {"lru_cache": [1.0]}, note=f"not measured: {exc!r}")]
        make = {
            "lru_cache": lambda: functools.lru_cache(maxsize=256)(identity),
            "warp_cache shared": lambda: cache(max_size=256, backend="shared")(identity),
        }
        rows.append(compare("shared, pure hit, one process", ">= 0.75x", make, hits, len(hot), repeats, warm=hits, subject="warp_cache shared", goal=0.75))
        zipf = zipf_keys(2000, n, 1.0, seed=5)

        def zipf_calls(fn):
            for k in zipf:
                fn(k)

        make_z = {
            "lru_cache": lambda: functools.lru_cache(maxsize=256)(identity),
            "warp_cache shared": lambda: cache(max_size=256, backend="shared")(identity),
        }
        rows.append(compare("shared, Zipf over 2000 keys, size 256", "(report)", make_z, zipf_calls, n, repeats, subject="warp_cache shared"))

        # All-miss: every call a new key, every insert evicts (issue 12: >= 0.6x the memory
        # backend). Each repeat makes a fresh function; its keys continue where the last
        # repeat stopped, so no repeat meets a key an earlier one stored.
        next_key = [0]

        def all_miss(fn):
            start = next_key[0]
            next_key[0] += n
            for k in range(start, start + n):
                fn(k)

        make_m = {
            "warp_cache memory": lambda: cache(max_size=128)(identity),
            "warp_cache shared": lambda: cache(max_size=128, backend="shared")(identity),
        }
        rows.append(
            compare(
                "shared, all-miss at size 128 vs the memory backend",
                ">= 0.6x",
                make_m,
                all_miss,
                n,
                repeats,
                baseline="warp_cache memory",
                subject="warp_cache shared",
                goal=0.6,
            )
        )

        def aggregate(procs: int, window_s: float = 1.0) -> float:
            """Calls per second of `procs` worker processes hammering one shared cache over a
            common window: every worker starts at the same CLOCK_MONOTONIC instant and stops
            after `window_s`; the rate is all their calls divided by the time from that start
            to the last worker's stop (not a sum of per-process rates, which would count two
            processes that ran one after the other as a 2x speed-up)."""
            go = os.path.join(tmp, f"go-{procs}-{time.monotonic_ns()}")
            code = SHARED_WORKER.format(here=os.path.join(HERE, ".."), barrier=go)
            env = dict(os.environ, WARP_CACHE_DIR=tmp)
            # A script file, not `-c`: code without a file is never shared between processes
            # (warp_cache/_shared.py), and the workers must share one cache.
            script = os.path.join(tmp, "shared_worker.py")
            with open(script, "w") as out:
                out.write(code)
            ps = [subprocess.Popen([sys.executable, script], stdout=subprocess.PIPE, env=env, text=True) for _ in range(procs)]
            time.sleep(0.5 + 0.2 * procs)  # imports and warm-up
            start = time.monotonic() + 0.05
            with open(go + ".tmp", "w") as out:
                out.write(f"{start!r} {window_s!r}")
            os.rename(go + ".tmp", go)
            results = [p.communicate()[0].split() for p in ps]
            if any(p.returncode != 0 for p in ps):
                raise RuntimeError("a shared-backend benchmark worker failed")
            calls = sum(int(r[0]) for r in results)
            last_stop = max(float(r[1]) for r in results)
            return calls / (last_stop - start)

        one, two = [], []
        for _ in range(repeats):
            one.append(aggregate(1))
            two.append(aggregate(2))
        rows.append(
            Row(
                "shared, pure hit, 2 processes aggregate vs 1 process",
                ">= 1.7x",
                {"1 process": statistics.median(one), "2 processes": statistics.median(two)},
                {"1 process": [1.0] * repeats, "2 processes": [b / a for a, b in zip(one, two)]},
                baseline="1 process",
                subject="2 processes",
                goal=1.7,
            )
        )
        os.environ.pop("WARP_CACHE_DIR", None)
    return rows


def contention_rows(repeats: int) -> list[Row]:
    """benches/contention.py's paired scaling figure (issue 12), quiet and with one busy
    process: `repeats` paired rounds (at least 3) of 1,000,000 calls per process."""
    sys.path.insert(0, HERE)
    import contention

    rows = []
    for state in ("quiet", "busy"):
        result = contention.measure(state, max(3, repeats), 1_000_000)
        contention.report(result)
        for n in (2, 4):
            rows.append(
                Row(
                    f"shared Zipf scaling at {n} processes / uncached scaling, {state}",
                    ">= 0.9",
                    {"uncached": 1.0, "paired": statistics.median(result.paired[n])},
                    {"uncached": [1.0] * len(result.paired[n]), "paired": result.paired[n]},
                    baseline="uncached",
                    subject="paired",
                    goal=0.9,
                    ratio_only=True,
                )
            )
            rows.append(
                Row(
                    f"shared Zipf, {n} processes aggregate / 1 process, {state}",
                    ">= 1.0",
                    {"1 process": 1.0, f"{n} processes": statistics.median(result.shared_gain[n])},
                    {"1 process": [1.0] * len(result.shared_gain[n]), f"{n} processes": result.shared_gain[n]},
                    baseline="1 process",
                    subject=f"{n} processes",
                    goal=1.0,
                    ratio_only=True,
                )
            )
    return rows


MEMORY_PROBE = r"""
import functools, gc, sys
sys.path.insert(0, {here!r})
def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
def identity(x):
    return x
kind = {kind!r}
n = {n}
keys = [10**9 + i for i in range(n)]
if kind == "lru_cache":
    fn = functools.lru_cache(maxsize=n)(identity)
elif kind == "warp_cache":
    from warp_cache import cache
    fn = cache(max_size=n)(identity)
else:
    from warp_cache import cache
    fn = cache(max_size=n, backend="shared")(identity)
fn(-1)
gc.collect()
before = rss_bytes()
for k in keys:
    fn(k)
gc.collect()
print((rss_bytes() - before) / n)
"""


def memory_per_entry(n: int, repeats: int = 3) -> dict[str, float]:
    """RSS growth per entry when filling n int->int entries, each cache in a fresh process;
    the median of `repeats` processes per cache."""
    runs = [one_memory_per_entry(n) for _ in range(repeats)]
    return {k: statistics.median(run.get(k, float("nan")) for run in runs) for k in runs[0]}


def one_memory_per_entry(n: int) -> dict[str, float]:
    out = {}
    for kind in ("lru_cache", "warp_cache", "warp_cache shared"):
        with tempfile.TemporaryDirectory() as tmp:
            code = MEMORY_PROBE.format(here=os.path.join(HERE, ".."), kind=kind, n=n)
            env = dict(os.environ, WARP_CACHE_DIR=tmp)
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                out[kind] = float("nan")
                print(f"  {kind}: failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr else proc.returncode}")
                continue
            out[kind] = float(proc.stdout.strip())
            if kind == "warp_cache shared":
                files = [os.path.join(tmp, f) for f in os.listdir(tmp)]
                blocks = sum(os.stat(f).st_blocks * 512 for f in files if os.path.isfile(f))
                out["warp_cache shared (/dev/shm bytes)"] = blocks / n
    return out


SHM_BYTES_PROBE = r"""
import json, os, random, sys
sys.path.insert(0, {here!r})
from warp_cache import cache
n, payload, value_limit = {n}, {payload}, {value_limit}
block = random.Random(1).randbytes(max(payload, 0))

@cache(max_size=n, backend="shared", max_value_size=value_limit)
def probe(i):
    if payload == 0:
        return i  # int -> int
    return i.to_bytes(8, "little") + block[8:]  # distinct, incompressible payloads

for i in range(n):
    probe(10**9 + i)
info = probe.cache_info()
files = probe._shared_files()
print(json.dumps({{
    "entries": info.current_size, "fallback": info.fallback,
    "data": os.stat(files["data"]).st_blocks * 512,
    "data_size": os.stat(files["data"]).st_size,
    "lock": os.stat(files["lock"]).st_blocks * 512,
    "max_bytes": probe.cache_parameters().get("max_bytes"),
}}))
"""

#: (label, entries, bytes payload (0: int values), max_value_size, allowed B/entry as a
#: function of the encoded key + value bytes, the requirement in words).
#: Encoded sizes as docs/spec.md gives them: the key `(i,)` is a 5-byte tuple header and a
#: 9-byte int; an int value is 9 bytes, a bytes value 5 + its length. The payloads make the
#: encoded value exactly max_value_size (4 KiB, 64 KiB).
SHM_BYTES_CASES = (
    ("100k int -> int", 100_000, 0, 4096, lambda enc: 256.0, "<= 256 B"),
    ("10k x 4 KiB values", 10_000, 4096 - 5, 4096, lambda enc: 1.25 * enc + 64, "<= 1.25x + 64 B"),
    ("10k x 64 KiB values", 10_000, 65536 - 5, 65536, lambda enc: 1.25 * enc + 64, "<= 1.25x + 64 B"),
)


def shm_bytes_rows() -> list[Row]:
    """The shared backend's cost in /dev/shm: allocated blocks (`st_blocks`) of a cache's data
    and lock files divided by the entries it holds, each cache filled in a fresh process and a
    fresh directory on /dev/shm (the backend's default filesystem). One run: the figures are
    block counts, not timings, and repeat exactly."""
    rows = []
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    print("\n## shared backend, /dev/shm bytes per entry (allocated blocks of the data + lock files / entries stored)")
    print(f"  {'workload':<34} {'entries':>8} {'B/entry':>10} {'encoded':>8} {'x enc':>6} {'allowed':>9}  {'data file (alloc/size)':<26} result")
    for label, n, payload, value_limit, allowance, rule in SHM_BYTES_CASES:
        key_bytes = 14
        value_bytes = 9 if payload == 0 else 5 + payload
        encoded = key_bytes + value_bytes
        with tempfile.TemporaryDirectory(prefix="warp-bench-bytes-", dir=base) as tmp:
            code = SHM_BYTES_PROBE.format(here=os.path.join(HERE, ".."), n=n, payload=payload, value_limit=value_limit)
            env = dict(os.environ, WARP_CACHE_DIR=tmp)
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            reason = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
            print(f"  {label:<34} failed: {reason}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        if r["fallback"] is not None or not r["entries"]:
            print(f"  {label:<34} not measured: entries={r['entries']} fallback={r['fallback']!r}")
            continue
        per_entry = (r["data"] + r["lock"]) / r["entries"]
        allowed = allowance(encoded)
        verdict = "met" if per_entry <= allowed else "MISSED"
        stored = f"{r['entries']:,}" if r["entries"] == n else f"{r['entries']:,}!"
        data_file = f"{r['data'] / 2**20:,.1f} / {r['data_size'] / 2**20:,.1f} MiB"
        print(
            f"  {label:<34} {stored:>8} {per_entry:10.1f} {encoded:8d} {per_entry / encoded:6.2f} {allowed:9.1f}  {data_file:<26} {verdict}"
        )
        if r["entries"] != n:
            print(f"    note: {r['entries']:,} of {n:,} entries stored (max_bytes={r['max_bytes']!r} binds)")
        subject = "warp_cache shared"
        rows.append(
            Row(
                f"shared shm B/entry vs allowed, {label}",
                rule,
                {subject: per_entry},
                {subject: [per_entry / allowed]},
                baseline=subject,
                subject=subject,
                goal=1.0,
                lower_is_better=True,
            )
        )
    print("  (encoded: key + value bytes as the codec writes them; x enc: B/entry / encoded; allowed: the requirement in B/entry)")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--ops", type=int, default=200_000, help="calls per timed loop")
    parser.add_argument("--quick", action="store_true", help="3 repeats, 50k ops (smoke run)")
    parser.add_argument("--only", default="", help="comma list: memory,bigmiss,threads,async,shared,contention,bytes,shmbytes (bytes includes shmbytes)")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.ops = 3, 50_000
    only = set(filter(None, args.only.split(",")))

    def want(section: str) -> bool:
        return not only or section in only

    import warp_cache

    print(f"# warp_cache benchmark  python {platform.python_version()}  {platform.machine()}  cores={os.cpu_count()}  cpu={cpu_model()}")
    print(f"# warp_cache from {os.path.dirname(warp_cache.__file__)}; repeats={args.repeats}, ops={args.ops}")
    print(f"# load average at start: {load_average()}")
    rows: list[Row] = []
    if want("memory"):
        rows += memory_rows(args.repeats, args.ops)
    if want("bigmiss"):
        rows += big_miss_rows(max(3, args.repeats // 2), args.ops)
    if want("threads"):
        rows.append(threads_row(max(3, args.repeats // 2), args.ops // 8))
    if want("async"):
        rows.append(async_row(args.repeats, args.ops))
    if want("shared"):
        rows += shared_rows(args.repeats, args.ops)
    if want("contention"):
        rows += contention_rows(args.repeats)
    for row in rows:
        print_row(row)
    if want("bytes"):
        print("\n## bytes per entry, 100k int -> int entries (RSS growth, median of 3 processes; target: warp_cache <= lru_cache)")
        per_entry = memory_per_entry(100_000)
        for label, value in per_entry.items():
            print(f"  {label:<36} {value:8.1f} B/entry")
        base = per_entry["lru_cache"]
        rows.append(
            Row(
                "memory backend bytes per entry, 100k int -> int entries",
                "<= 1.0x",
                per_entry,
                {k: [v / base] for k, v in per_entry.items()},
                subject="warp_cache",
                goal=1.0,
                lower_is_better=True,
            )
        )
    if want("bytes") or want("shmbytes"):
        rows += shm_bytes_rows()
    print_summary(rows)
    print(f"\n# load average at end: {load_average()}")


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    main()
