"""Shared backend contention counters: ``cache_info().read_retries`` (lock-free reads redone
or held up by a write in progress), ``cache_info().lock_waits`` (writes that found the
writer lock held) and ``cache_info().lock_skips`` (results not stored because the lock's
holder made no progress), counted by every process using the cache (issue 12)."""

from __future__ import annotations

import multiprocessing
import os
import signal

from shared_util import needs_failpoints, wait_for_state
from test_shared_robustness import Peer, fill, target, timed_call
from warp_cache import cache


def test_the_counters_stay_zero_without_contention():
    f = cache(backend="shared", max_size=64)(target)
    for x in range(100):  # misses and evictions
        timed_call(f, x)
    for _ in range(3):
        for x in range(40):  # then hits
            timed_call(f, x)
    info = f.cache_info()
    assert info.hits > 0 and info.misses >= 100
    assert (info.read_retries, info.lock_waits, info.lock_skips) == (0, 0, 0)
    assert "read_retries=0, lock_waits=0, lock_skips=0" in repr(info)


def test_the_memory_backend_has_no_contention_counters():
    f = cache(max_size=8)(target)
    f(1)
    info = f.cache_info()
    assert info.read_retries is None and info.lock_waits is None and info.lock_skips is None
    assert "read_retries" not in repr(info) and "lock_skips" not in repr(info)


@needs_failpoints
def test_a_writer_stalled_in_its_section_shows_in_both_counters():
    f = cache(backend="shared", max_size=64)(target)
    for x in range(32):
        timed_call(f, x)
    assert (f.cache_info().read_retries, f.cache_info().lock_waits) == (0, 0)
    peer = Peer(max_size=64)
    try:
        # The peer stops inside a write section rewriting key 1 in place: the lock is held
        # and key 1's slot is odd.
        peer.ask("failpoint", "mid_write:stop")
        peer.conn.send(("set_then_stall", 1))
        assert peer.conn.recv() == "entering"
        wait_for_state(peer.process.pid, "T")
        waits_before = f.cache_info().lock_waits
        assert f.cache_info().lock_skips == 0
        timed_call(f, 2)  # a hit of another slot is not held up (per-slot validation)
        timed_call(f, 5000)  # nor is a miss's read (its insert meets the held lock) ...
        assert f.cache_info().read_retries == 0
        assert f.cache_info().lock_skips == 1, "... which skips storing its result"
        assert f.cache_info().misses == 33
        timed_call(f, 5000)  # so it misses again
        assert f.cache_info().misses == 34
        timed_call(f, 1)  # a read of key 1 waits for its slot, then misses
        info = f.cache_info()
        assert info.read_retries >= 1, info
        assert info.lock_waits >= waits_before + 1, info
    finally:
        os.kill(peer.process.pid, signal.SIGKILL)
        peer.process.join(10)


def _writer_of_other_keys(conn, max_size, new_keys, writes):
    """Inserts new keys (into empty buckets) and rewrites them in place, never evicting."""
    f = cache(backend="shared", max_size=max_size)(target)
    conn.send("ready")
    conn.recv()
    for i in range(writes):
        key = 10_000 + i % new_keys
        if i < new_keys:
            f(key)  # a miss: a new entry
        else:
            f.cache_set(target(key), key)  # the same entry, rewritten in place
    conn.send(writes)


def test_hits_are_never_held_up_by_writes_of_other_entries():
    """Issue 12: a reader validates the slot it copies, not one global sequence, so another
    process writing other entries all the time never makes a hit retry or wait. (With the
    global sequence this read loop met thousands of retries.)"""
    max_size, new_keys, writes = 8192, 4000, 16_000
    f = cache(backend="shared", max_size=max_size)(target)
    hot = range(50)
    fill(f, hot)
    ctx = multiprocessing.get_context("fork")
    conn, child = ctx.Pipe()
    writer = ctx.Process(target=_writer_of_other_keys, args=(child, max_size, new_keys, writes), daemon=True)
    writer.start()
    try:
        assert conn.poll(60) and conn.recv() == "ready"
        hits_before = f.cache_info().hits
        conn.send("go")
        reads = 0
        while not conn.poll(0):
            for x in hot:
                timed_call(f, x)
            reads += len(hot)
        assert conn.recv() == writes
        info = f.cache_info()
        assert info.hits - hits_before >= reads, "every hot read was a hit"
        assert reads >= 1000, f"only {reads} reads overlapped the writes"
        print(f"{reads} hot reads overlapped {writes} writes; read_retries={info.read_retries}")
        assert info.current_size == len(hot) + new_keys, "no eviction, so nothing moved"
        assert info.read_retries == 0, info
    finally:
        writer.join(30)
        if writer.is_alive():
            os.kill(writer.pid, signal.SIGKILL)
            writer.join(10)
