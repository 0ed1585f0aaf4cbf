"""Async functions: detection, hits that never suspend, single flight per key, cancellation,
several event loops in several threads.

Behaviour both backends share is tested over both in test_both_backends.py."""

from __future__ import annotations

import asyncio
import collections.abc
import inspect
import threading

import pytest

from warp_cache import cache


def run(awaitable):
    """Runs a coroutine on a fresh event loop (no pytest-asyncio configuration needed)."""
    return asyncio.run(awaitable)


def test_hits_never_suspend():
    @cache()
    async def value(x):
        await asyncio.sleep(0)
        return x + 1

    async def main():
        assert await value(1) == 2  # miss
        ticks = 0
        stop = False

        async def ticker():
            nonlocal ticks
            while not stop:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        before = ticks
        for _ in range(200):
            assert await value(1) == 2
        assert ticks == before, "awaiting a hit never yielded to the event loop"
        stop = True
        await task

    run(main())


def test_hit_is_an_already_completed_coroutine_like_object():
    @cache()
    async def value(x):
        return (x, "tuple", "value")

    async def main():
        await value(1)
        hit = value(1)
        assert inspect.isawaitable(hit)
        assert isinstance(hit, collections.abc.Coroutine)
        with pytest.raises(StopIteration) as stop:
            hit.send(None)
        assert stop.value.value == (1, "tuple", "value"), "a tuple value is not unpacked"
        # asyncio machinery accepts hits too.
        assert await asyncio.create_task(value(1)) == (1, "tuple", "value")
        assert await asyncio.gather(value(1), value(1)) == [(1, "tuple", "value")] * 2
        assert await asyncio.wait_for(value(1), 1) == (1, "tuple", "value")
        with pytest.raises(KeyError):
            value(1).throw(KeyError("x"))
        value(1).close()

    run(main())


def test_cancelling_the_leader_does_not_strand_the_waiters():
    calls = []

    @cache()
    async def compute(x):
        calls.append(x)
        await gate.wait()
        return ("done", x)

    async def main():
        global gate
        gate = asyncio.Event()
        leader = asyncio.create_task(compute(1))
        await asyncio.sleep(0)
        assert calls == [1]
        waiters = [asyncio.create_task(compute(1)) for _ in range(3)]
        await asyncio.sleep(0)
        leader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leader
        await asyncio.sleep(0.01)
        assert calls == [1, 1], "exactly one waiter took over"
        gate.set()
        assert await asyncio.gather(*waiters) == [("done", 1)] * 3
        assert await compute(1) == ("done", 1)
        assert calls == [1, 1]

    run(main())


def test_cancelling_a_waiter_leaves_the_computation_alone():
    calls = []

    @cache()
    async def compute(x):
        calls.append(x)
        await asyncio.sleep(0.03)
        return x

    async def main():
        leader = asyncio.create_task(compute(7))
        await asyncio.sleep(0)
        waiter = asyncio.create_task(compute(7))
        other = asyncio.create_task(compute(7))
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert await leader == 7 and await other == 7
        assert calls == [7]

    run(main())


def test_wait_for_timeout_on_a_waiter():
    @cache()
    async def slow(x):
        await asyncio.sleep(0.05)
        return x

    async def main():
        leader = asyncio.create_task(slow(1))
        await asyncio.sleep(0)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(slow(1), 0.005)
        assert await leader == 1
        assert await slow(1) == 1

    run(main())


def test_several_event_loops_in_several_threads():
    calls = []
    calls_lock = threading.Lock()

    @cache(max_size=64)
    async def compute(x):
        with calls_lock:
            calls.append(x)
        await asyncio.sleep(0.005)
        return x * 10

    errors = []

    def thread_main(offset):
        async def main():
            for round_ in range(3):
                keys = [(offset + i) % 12 for i in range(12)]
                results = await asyncio.gather(*(compute(k) for k in keys), *(compute(k) for k in keys))
                assert results == [k * 10 for k in keys] * 2

        try:
            asyncio.run(main())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=thread_main, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    # Within one loop a key is computed once; across loops at most once per loop.
    assert len(calls) <= 12 * 4
    info = compute.cache_info()
    assert info.hits + info.misses == 4 * 3 * 24


def test_async_methods_and_kwargs():
    class Service:
        def __init__(self):
            self.calls = 0

        @cache()
        async def get(self, key, *, scale=1):
            self.calls += 1
            return key * scale

    async def main():
        service = Service()
        assert await service.get(2, scale=3) == 6
        assert await service.get(2, scale=3) == 6
        assert await service.get(2) == 2
        assert service.calls == 2

    run(main())


def test_async_ttl_zero_and_unhashable():
    calls = []

    @cache(ttl=0)
    async def f(x):
        calls.append(x)
        return x

    async def main():
        assert await f(1) == 1 and await f(1) == 1
        assert calls == [1, 1]
        with pytest.raises(TypeError):
            await f([1])

    run(main())


def test_coroutine_closed_without_running_leaves_no_stale_flight():
    @cache()
    async def f(x):
        return x

    async def main():
        f(1).close()  # a miss coroutine dropped unawaited
        assert await f(1) == 1

    run(main())


def test_leader_coroutine_closed_mid_flight_lets_waiters_retry():
    calls = []

    @cache()
    async def f(x):
        calls.append(x)
        await asyncio.sleep(0.01)
        return x

    async def main():
        leader = f(5)
        step = leader.send(None)  # runs until the first suspension: registers the flight
        del step
        waiter = asyncio.create_task(f(5))
        await asyncio.sleep(0)
        leader.close()  # GeneratorExit inside the leader
        assert await waiter == 5
        assert calls == [5, 5]

    run(main())
