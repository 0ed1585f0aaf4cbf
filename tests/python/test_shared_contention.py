"""Shared backend contention counters: ``cache_info().read_retries`` (lock-free reads redone
or held up by a write in progress) and ``cache_info().lock_waits`` (writes that found the
writer lock held), counted by every process using the cache (issue 12)."""

from __future__ import annotations

import os
import signal

from shared_util import needs_failpoints, wait_for_state
from test_shared_robustness import Peer, target, timed_call
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
    assert (info.read_retries, info.lock_waits) == (0, 0)
    assert "read_retries=0, lock_waits=0" in repr(info)


def test_the_memory_backend_has_no_contention_counters():
    f = cache(max_size=8)(target)
    f(1)
    info = f.cache_info()
    assert info.read_retries is None and info.lock_waits is None
    assert "read_retries" not in repr(info)


@needs_failpoints
def test_a_writer_stalled_in_its_section_shows_in_both_counters():
    f = cache(backend="shared", max_size=64)(target)
    for x in range(32):
        timed_call(f, x)
    assert (f.cache_info().read_retries, f.cache_info().lock_waits) == (0, 0)
    peer = Peer(max_size=64)
    try:
        # The peer stops inside a write section: the sequence is odd and the lock is held.
        peer.ask("failpoint", "mid_write:stop")
        peer.conn.send(("insert_then_stall", 1000))
        assert peer.conn.recv() == "entering"
        wait_for_state(peer.process.pid, "T")
        timed_call(f, 1)  # a read of a stored key meets the odd sequence
        waits_before = f.cache_info().lock_waits
        timed_call(f, 5000)  # a miss: its insert meets the held lock
        info = f.cache_info()
        assert info.read_retries >= 1, info
        assert info.lock_waits >= waits_before + 1, info
    finally:
        os.kill(peer.process.pid, signal.SIGKILL)
        peer.process.join(10)
