"""Latency of shared-backend calls while another process is stopped holding the writer lock.

A peer process arms the `after_lock:stop` failpoint and misses once: it takes the writer
lock and stops (SIGSTOP) holding it, as a writer descheduled or stopped inside its section
would. This process then times calls of the same cache: hits (which never take the lock)
and misses (whose insert finds the lock held by a live process that makes no progress, and
skips caching after a bound). Per-call latency percentiles are printed; nothing is asserted.

    python benches/stalled_writer.py            # 300 misses, 300 hits
    python benches/stalled_writer.py --calls 1000

Needs a build of the extension with the failpoints feature
(`maturin develop --release --features failpoints`, as the tests use).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import statistics
import tempfile
import time


def target(x):
    return x * 3


def _peer(conn, cache_dir):
    os.environ["WARP_CACHE_DIR"] = cache_dir
    import warp_cache._warp_cache as native
    from warp_cache import cache

    f = cache(backend="shared", max_size=4096)(target)
    native._set_failpoint("after_lock:stop")
    conn.send("entering")
    f(-1)  # stops holding the writer lock


def _process_state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def percentiles(samples_s: list[float]) -> str:
    us = sorted(s * 1e6 for s in samples_s)
    pick = lambda q: us[min(len(us) - 1, int(q * len(us)))]  # noqa: E731
    return f"median {statistics.median(us):8.1f} us, p99 {pick(0.99):8.1f} us, max {us[-1]:8.1f} us"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    cache_dir = tempfile.mkdtemp(prefix="warp-stalled-")
    os.environ["WARP_CACHE_DIR"] = cache_dir
    import warp_cache._warp_cache as native
    from warp_cache import cache

    if not hasattr(native, "_set_failpoint"):
        raise SystemExit("this build has no failpoints: build with --features failpoints")
    f = cache(backend="shared", max_size=4096)(target)
    for x in range(args.calls):
        f(x)  # the hits below
    ctx = multiprocessing.get_context("fork")
    conn, child = ctx.Pipe()
    peer = ctx.Process(target=_peer, args=(child, cache_dir), daemon=True)
    peer.start()
    try:
        assert conn.poll(60) and conn.recv() == "entering"
        deadline = time.monotonic() + 20
        while _process_state(peer.pid) != "T":
            if time.monotonic() > deadline:
                raise SystemExit("the peer never stopped at its failpoint")
            time.sleep(0.005)
        hits, misses = [], []
        for x in range(args.calls):
            start = time.perf_counter()
            assert f(x) == 3 * x
            hits.append(time.perf_counter() - start)
            start = time.perf_counter()
            assert f(10**6 + x) == 3 * (10**6 + x)
            misses.append(time.perf_counter() - start)
        print(f"writer lock held by a stopped process ({args.calls} calls each):")
        print(f"  hit : {percentiles(hits)}")
        print(f"  miss: {percentiles(misses)}")
        info = f.cache_info()
        print(f"  lock_waits {info.lock_waits}, read_retries {info.read_retries}")
    finally:
        os.kill(peer.pid, signal.SIGKILL)
        peer.join(10)


if __name__ == "__main__":
    main()
