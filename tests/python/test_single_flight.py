"""Single flight of synchronous misses (``single_flight=``, on by default): threads of one
process, and on the shared backend processes of one machine, that miss the same key at once
compute it once; the others wait (GIL released, bounded) and read the cache. A computing
process killed with SIGKILL stops delaying the others within the dead-owner check; an
exception is not cached and the waiters compute themselves; a recursion into the key being
computed computes directly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from shared_util import child_env, write_script
from warp_cache import SINGLE_FLIGHT_WAIT_SECONDS, cache

# Synchronization objects of the cached functions below, as module globals (a shared-backend
# function may not capture an unpicklable value).
BARRIERS: dict = {}
LOCK = threading.Lock()


def run_threads(count, target):
    """Runs ``target(index)`` in ``count`` threads released together; their results."""
    barrier = threading.Barrier(count)
    results = [None] * count
    errors = []

    def body(index):
        barrier.wait()
        try:
            results[index] = target(index)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    return results, errors


def test_eight_threads_missing_one_key_compute_it_once(backend):
    calls = []

    @cache(max_size=16, backend=backend)
    def slow(x):
        calls.append(x)
        time.sleep(0.3)
        return [x, x]

    results, errors = run_threads(8, lambda _: slow(21))
    assert not errors
    assert calls == [21]
    assert results == [[21, 21]] * 8
    info = slow.cache_info()
    # Waiters are counted as misses (as async callers that join a computation are).
    assert (info.hits, info.misses, info.current_size) == (0, 8, 1)
    assert slow.cache_parameters()["single_flight"] == SINGLE_FLIGHT_WAIT_SECONDS


def test_waiting_threads_release_the_gil(backend):
    """While seven threads wait for the computation, another thread keeps running Python."""
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.001)

    @cache(max_size=16, backend=backend)
    def slow(x):
        # Sleeping releases the GIL for the leader; the waiters must not hold it either.
        time.sleep(0.3)
        return x

    thread = threading.Thread(target=ticker)
    thread.start()
    try:
        results, errors = run_threads(8, lambda _: slow(1))
    finally:
        stop.set()
        thread.join()
    assert not errors and results == [1] * 8
    assert len(ticks) > 50, f"the ticker ran {len(ticks)} times in 0.3 s"


def test_single_flight_false_lets_every_thread_compute(backend):
    BARRIERS["together"] = threading.Barrier(4)

    @cache(max_size=16, backend=backend, single_flight=False)
    def together(x):
        BARRIERS["together"].wait(10)  # all four must be in here at once
        return x

    results, errors = run_threads(4, lambda _: together(3))
    assert not errors, errors
    assert results == [3] * 4
    assert together.cache_parameters()["single_flight"] is False


def test_a_recursion_into_the_key_being_computed_does_not_deadlock(backend):
    calls = []

    @cache(max_size=16, backend=backend)
    def again(x, depth=0):
        calls.append(depth)
        if depth < 2:
            # The same key as the outer call (depth is a keyword with its default).
            return again(x) if depth == -1 else again(x, depth=depth + 1)
        return x

    @cache(max_size=16, backend=backend)
    def itself(x):
        calls.append("itself")
        return itself(x) if len(calls) < 6 else x

    assert again(5) == 5
    assert calls == [0, 1, 2]
    assert itself(7) == 7, "a call of the very key it computes: computed directly"
    assert calls.count("itself") == 3


def test_an_exception_is_not_cached_and_a_waiter_computes_next(backend):
    calls = []

    @cache(max_size=16, backend=backend)
    def fails_first(x):
        with LOCK:
            calls.append(x)
            first = len(calls) == 1
        time.sleep(0.2)
        if first:
            raise ValueError("first call fails")
        return x + 1

    results, errors = run_threads(4, lambda _: fails_first(1))
    assert [type(e) for e in errors] == [ValueError], "only the leader's call raised"
    assert sorted(r for r in results if r is not None) == [2, 2, 2]
    # The leader failed; one waiter computed next and the other two read its value.
    assert len(calls) == 2
    assert fails_first.cache_peek(1) == 2


def test_a_waiter_computes_itself_after_the_bound(backend):
    calls = []

    @cache(max_size=16, backend=backend, single_flight=0.2)
    def very_slow(x):
        with LOCK:
            calls.append(x)
            first = len(calls) == 1
        time.sleep(1.5 if first else 0.0)
        return x

    finished = {}

    def call(index):
        if index == 1:
            time.sleep(0.1)  # the leader is computing by now
        value = very_slow(9)
        finished[index] = time.monotonic()
        return value

    started = time.monotonic()
    results, errors = run_threads(2, call)
    assert not errors and results == [9, 9]
    assert len(calls) == 2, "past the 0.2 s bound the waiter computed"
    assert finished[1] - started < 1.0, "without waiting for the 1.5 s leader"


def test_ttl_zero_has_no_flights(backend):
    BARRIERS["never_stored"] = threading.Barrier(3)

    @cache(max_size=16, backend=backend, ttl=0)
    def never_stored(x):
        BARRIERS["never_stored"].wait(10)  # nothing is stored, so nobody waits for anybody
        return x

    results, errors = run_threads(3, lambda _: never_stored(1))
    assert not errors and results == [1, 1, 1]


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (0, ValueError),
        (-1.0, ValueError),
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        ("yes", TypeError),
        (None, TypeError),
    ],
)
def test_bad_single_flight_values_are_errors(value, error):
    with pytest.raises(error, match="single_flight must be True, False or a wait bound"):
        cache(single_flight=value)


# --- across processes (shared backend) ------------------------------------------------------

MODULE = """
import os, sys, time
from warp_cache import cache

@cache(max_size=64, backend="shared", single_flight=30)
def slow(x):
    with open(os.environ["SF_LOG"], "a") as log:
        log.write(f"{os.getpid()} {x}\\n")
    time.sleep(float(os.environ["SF_SLEEP"]))
    return x * 2

if __name__ == "__main__":
    start_at = float(sys.argv[1])
    while time.time() < start_at:
        time.sleep(0.001)
    began = time.monotonic()
    value = slow(21)
    print(value, round(time.monotonic() - began, 3), flush=True)
"""


def start_workers(tmp_path: Path, count: int, start_in_s: float, **env: str):
    script = write_script(tmp_path / "flights", "sf_module.py", MODULE)
    start_at = str(time.time() + start_in_s)
    return [
        subprocess.Popen(
            [sys.executable, str(script), start_at],
            env=child_env(Path(os.environ["WARP_CACHE_DIR"]), SF_LOG=str(tmp_path / "log"), **env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]


def computations(tmp_path: Path):
    log = tmp_path / "log"
    return log.read_text().split("\n")[:-1] if log.exists() else []


def test_four_processes_missing_one_key_compute_it_once(tmp_path):
    workers = start_workers(tmp_path, 4, 1.5, SF_SLEEP="0.5")
    outputs = [worker.communicate(timeout=60) for worker in workers]
    assert all(worker.returncode == 0 for worker in workers), outputs
    assert [out.split()[0] for out, _ in outputs] == ["42"] * 4
    assert len(computations(tmp_path)) == 1, computations(tmp_path)


def test_a_killed_computing_process_stops_delaying_the_others(tmp_path):
    # The leader computes for a minute; the others would wait 30 s (the bound) for it.
    leader = start_workers(tmp_path, 1, 0.0, SF_SLEEP="60")[0]
    deadline = time.monotonic() + 30
    while not computations(tmp_path):
        assert time.monotonic() < deadline, "the leader never started computing"
        time.sleep(0.01)
    waiters = start_workers(tmp_path, 3, 0.0, SF_SLEEP="0.2")
    time.sleep(1.0)  # they are waiting for the leader now
    assert all(waiter.poll() is None for waiter in waiters), "nobody finished before the kill"
    leader.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    outputs = [waiter.communicate(timeout=60) for waiter in waiters]
    finished_in = time.monotonic() - killed_at
    assert all(waiter.returncode == 0 for waiter in waiters), outputs
    assert [out.split()[0] for out, _ in outputs] == ["42"] * 3, "a correct value"
    # Found dead within the liveness check (50 ms); then each waiter computes (0.2 s: they
    # do not wait a second time): far below the 30 s bound.
    assert finished_in < 5.0, finished_in
    assert len(computations(tmp_path)) == 4, computations(tmp_path)
    leader.wait()
