"""Cross-process single flight, measured as a Gunicorn deployment sees it.

A master process imports the application (one ``@cache(backend="shared")`` function that takes
``--work-ms`` per computation), then forks ``--workers`` workers, as Gunicorn with ``--preload``
does. Each worker serves the same ``--keys`` keys in its own random order, all starting at once
(concurrent load: several workers miss the same key at the same moment). Every computation is
logged, and the run reports how many there were: ideally exactly one per key.

Not a test (it asserts nothing): it prints the figure for ``single_flight=True`` (the default)
and ``single_flight=False`` (what every worker computing on its own gives), in one run:

    python benches/single_flight_workers.py [--workers 5] [--keys 500] [--work-ms 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time


def make_app(single_flight: bool, log_path: str, work_s: float):
    from warp_cache import cache

    @cache(max_size=4096, backend="shared", single_flight=single_flight)
    def render(key):
        with open(log_path, "a") as log:  # O_APPEND: one line per computation
            log.write(f"{os.getpid()} {key}\n")
        time.sleep(work_s)
        return key * 2

    render.cache_clear()
    return render


def worker(render, keys, seed: int, start_at: float) -> None:
    order = list(keys)
    random.Random(seed).shuffle(order)
    while time.time() < start_at:
        time.sleep(0.0005)
    for key in order:
        assert render(key) == key * 2
    os._exit(0)


def run(workers: int, keys: int, work_ms: float, single_flight: bool, seed: int):
    with tempfile.TemporaryDirectory() as scratch:
        log_path = os.path.join(scratch, "computations")
        render = make_app(single_flight, log_path, work_ms / 1000)
        start_at = time.time() + 0.5
        began = time.monotonic()
        pids = []
        for index in range(workers):
            pid = os.fork()
            if pid == 0:
                worker(render, range(keys), seed * 100 + index, start_at)
            pids.append(pid)
        statuses = [os.waitpid(pid, 0)[1] for pid in pids]
        elapsed = time.monotonic() - began - 0.5
        with open(log_path) as log:
            lines = log.read().splitlines()
        computed = {line.split()[1] for line in lines}
        return len(lines), len(computed), elapsed, statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=5)
    parser.add_argument("--keys", type=int, default=500)
    parser.add_argument("--work-ms", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("WARP_CACHE_DIR", tempfile.mkdtemp(prefix="warp-sf-bench-"))
    print(
        f"{args.workers} forked workers x {args.keys} keys (each worker all keys, own order), "
        f"{args.work_ms} ms per computation; cache dir {os.environ['WARP_CACHE_DIR']}; "
        f"Python {sys.version.split()[0]}, load {os.getloadavg()[0]:.2f}"
    )
    print(f"{'single_flight':>13} {'round':>5} {'computations':>12} {'keys':>5} {'seconds':>8}")
    for single_flight in (True, False):
        for round_index in range(args.rounds):
            count, distinct, elapsed, statuses = run(
                args.workers, args.keys, args.work_ms, single_flight, round_index
            )
            failed = sum(1 for status in statuses if status != 0)
            note = f"  ({failed} workers failed)" if failed else ""
            print(
                f"{str(single_flight):>13} {round_index:>5} {count:>12} {distinct:>5} "
                f"{elapsed:>8.2f}{note}"
            )


if __name__ == "__main__":
    main()
