"""Per-key control on both backends: ``cache_peek``, ``cache_invalidate``, ``cache_set`` and
``cache_refresh`` use the key a call with the same arguments uses (keyword order does not
matter), without counting hits or misses, and keep SIEVE's meaning (a peek is not an access,
an invalidation is a removal)."""

from __future__ import annotations

import asyncio

import pytest

from warp_cache import cache


def counted(f):
    info = f.cache_info()
    return (info.hits, info.misses, info.current_size)


def test_peek_returns_the_cached_value_without_calling_or_counting(backend):
    calls = []

    @cache(max_size=8, backend=backend)
    def f(x, y=0):
        calls.append((x, y))
        return [x, y]

    with pytest.raises(KeyError):
        f.cache_peek(1, y=2)
    assert f(1, y=2) == [1, 2]
    assert f.cache_peek(1, y=2) == [1, 2]
    assert f(x=3, y=4) == [3, 4]
    assert f.cache_peek(y=4, x=3) == [3, 4], "keyword order does not matter"
    with pytest.raises(KeyError):
        f.cache_peek(2)
    assert calls == [(1, 2), (3, 4)]
    assert counted(f) == (0, 2, 2), "peeks count neither hits nor misses"


def test_peek_is_not_an_access_for_sieve(backend):
    @cache(max_size=2, backend=backend)
    def f(x):
        return x

    f("a")
    f("b")
    assert f.cache_peek("a") == "a"
    f("c")  # "a" is the oldest and unvisited: SIEVE evicts it, a hit would have saved it
    with pytest.raises(KeyError):
        f.cache_peek("a")
    assert f.cache_peek("b") == "b" and f.cache_peek("c") == "c"


def test_invalidate_removes_one_entry(backend):
    calls = []

    @cache(max_size=8, backend=backend)
    def f(x, *, scale=1):
        calls.append(x)
        return x * scale

    assert [f(1, scale=2), f(2, scale=2)] == [2, 4]
    assert f.cache_invalidate(1, scale=2) is True
    assert f.cache_invalidate(1, scale=2) is False, "already gone"
    assert f.cache_invalidate(1) is False, "another key (no keyword)"
    assert f.cache_info().current_size == 1
    assert f(2, scale=2) == 4 and calls == [1, 2], "the other entry still hits"
    assert f(1, scale=2) == 2 and calls == [1, 2, 1], "recomputed"


def test_invalidate_keeps_sieve_exact(backend):
    # Fill, visit, evict, then invalidate the entry the hand is on: the hand must move as
    # libCacheSim's does (not dangle), which decides the next victim.
    @cache(max_size=4, backend=backend)
    def f(x):
        return x

    for x in range(4):
        f(x)
    f(0)
    f(1)  # visited: 0, 1
    f(4)  # evicts 2 (the first unvisited from the tail), clearing 0's and 1's bits
    assert f.cache_invalidate(3) is True
    f(5)  # a free slot: no eviction
    assert f.cache_info().current_size == 4
    for x in (0, 1, 4, 5):
        assert f.cache_peek(x) == x
    # The hand was on 3 when it was removed: as libCacheSim's Sieve_remove_obj, it moved to
    # 3's newer neighbour (4), which is unvisited, so 4 is the next victim.
    f(6)
    assert [x for x in (0, 1, 4, 5, 6) if _present(f, x)] == [0, 1, 5, 6]


def _present(f, x):
    try:
        f.cache_peek(x)
        return True
    except KeyError:
        return False


def test_set_stores_a_value_and_updates_in_place(backend):
    calls = []

    @cache(max_size=8, backend=backend)
    def f(x):
        calls.append(x)
        return x

    assert f.cache_set("preset", 1) is True
    assert f(1) == "preset" and calls == []
    assert f.cache_set("again", 1) is True
    assert f(1) == "again"
    assert f.cache_info().current_size == 1
    assert counted(f)[:2] == (2, 0)


def test_refresh_recomputes_and_stores(backend):
    version = [1]

    @cache(max_size=8, backend=backend)
    def f(x):
        return (x, version[0])

    assert f(1) == (1, 1)
    version[0] = 2
    assert f(1) == (1, 1), "cached"
    assert f.cache_refresh(1) == (1, 2)
    assert f(1) == (1, 2)


def test_refresh_that_raises_stores_nothing(backend):
    @cache(max_size=8, backend=backend)
    def f(x):
        if x < 0:
            raise ValueError(x)
        return x

    with pytest.raises(ValueError):
        f.cache_refresh(-1)
    with pytest.raises(KeyError):
        f.cache_peek(-1)


def test_async_per_key_methods(backend):
    version = [1]

    @cache(max_size=8, backend=backend)
    async def f(x):
        await asyncio.sleep(0)
        return (x, version[0])

    async def main():
        assert await f(1) == (1, 1)
        assert f.cache_peek(1) == (1, 1), "the value, not an awaitable"
        version[0] = 2
        refreshed = f.cache_refresh(1)
        assert asyncio.iscoroutine(refreshed)
        assert await refreshed == (1, 2)
        assert await f(1) == (1, 2)
        assert f.cache_set((1, "set"), 1) is True
        assert await f(1) == (1, "set")
        assert f.cache_invalidate(1) is True
        assert await f(1) == (1, 2)

    asyncio.run(main())


def test_ttl_zero_stores_nothing(backend):
    @cache(max_size=8, ttl=0, backend=backend)
    def f(x):
        return x

    assert f.cache_set(5, 1) is False
    with pytest.raises(KeyError):
        f.cache_peek(1)


def test_unhashable_arguments_are_a_type_error(backend):
    @cache(max_size=8, backend=backend)
    def f(x):
        return x

    if backend == "memory":  # as a call: the memory backend's keys are hashed
        with pytest.raises(TypeError):
            f.cache_peek([1])
        with pytest.raises(TypeError):
            f.cache_invalidate([1])
        with pytest.raises(TypeError):
            f.cache_set(0, [1])
    else:  # the shared backend's keys are encoded (pickled): a list is a key like any other
        assert f.cache_set(0, [1]) is True and f.cache_peek([1]) == 0
        assert f.cache_invalidate([1]) is True


def test_shared_rules_for_cache_set(warp_cache_dir):
    @cache(max_size=8, backend="shared", max_value_size=64)
    def f(x):
        return x

    assert f.cache_set("v" * 1000, 1) is False, "oversize value"
    assert f.cache_info().oversize_skips == 1
    assert f.cache_set(lambda: None, 2) is False, "unpicklable value"
    assert f.cache_set("v", 3) is True and f.cache_peek(3) == "v"


def test_shared_invalidate_is_seen_by_other_handles(warp_cache_dir):
    # Two decorations of the same function share one cache (as two processes do).
    def make():
        @cache(max_size=8, backend="shared")
        def shared_twin(x):
            return [x]

        return shared_twin

    first, second = make(), make()
    assert first(1) == [1]
    assert second.cache_peek(1) == [1]
    assert second.cache_invalidate(1) is True
    with pytest.raises(KeyError):
        first.cache_peek(1)
