"""The memory backend's fast paths: the vectorcall miss path that runs outside pyo3's
bookkeeping, the miss counted by the quick lookup, and the block hash of single int keys.
Each test pins a behaviour those optimisations could break."""

from __future__ import annotations

import asyncio
import gc
import random
import weakref

import pytest

from warp_cache import cache


def test_each_miss_and_hit_is_counted_once_on_every_call_path():
    @cache(max_size=8)
    def f(x, y=0):
        return (x, y)

    f(1)  # vectorcall, single-int key: quick miss, fast miss path
    f(1)
    f((1, 2))  # tuple key (KIND_ARGS), fast miss path builds the stored tuple
    f((1, 2))
    f(1, y=2)  # keywords: key built by from_parts
    f(1, y=2)
    type(f).__call__(f, 3)  # tp_call with an args tuple: the full path
    type(f).__call__(f, 3)
    info = f.cache_info()
    assert (info.hits, info.misses, info.current_size) == (4, 4, 4)


@pytest.mark.parametrize("count", [1, 2, 3, 8, 9, 12])
def test_keyword_order_never_matters(count):
    # Up to 8 keywords are sorted on the stack, more through keyword_order: one entry per
    # set of keywords, whatever the order of the call, and never shared with positionals.
    names = [f"k{i:02d}" for i in range(count)]

    @cache(max_size=64)
    def f(*args, **kwargs):
        return (args, tuple(sorted(kwargs.items())))

    rng = random.Random(count)
    expected = ((), tuple((n, i) for i, n in enumerate(names)))
    for _ in range(6):
        order = names[:]
        rng.shuffle(order)
        assert f(**{n: names.index(n) for n in order}) == expected
    assert f.cache_info().misses == 1
    assert f.cache_info().hits == 5
    flat = tuple(x for pair in expected[1] for x in pair)
    f(*flat)
    assert f.cache_info().misses == 2, "keywords never share an entry with positionals"


def test_async_misses_are_counted_once():
    @cache(max_size=8)
    async def f(x):
        return x * 2

    async def main():
        assert await f(2) == 4
        assert await f(2) == 4
        assert await f(3) == 6

    asyncio.run(main())
    info = f.cache_info()
    assert (info.hits, info.misses) == (1, 2)


def test_evicted_keys_and_values_are_released_during_the_evicting_call():
    # The fast miss path drops what an eviction displaced with plain Py_DECREF: had it dropped
    # pyo3 handles outside pyo3's bookkeeping, the release would be deferred and these weak
    # references would still be alive after the call.
    class Box:
        def __init__(self, n):
            self.n = n

        def __hash__(self):
            return hash(self.n)

        def __eq__(self, other):
            return isinstance(other, Box) and other.n == self.n

    @cache(max_size=2)
    def f(box):
        return Box(-box.n)

    keys = [Box(i) for i in range(3)]
    values = [f(k) for k in keys[:2]]
    key_ref, value_ref = weakref.ref(keys[0]), weakref.ref(values[0])
    del keys[0], values[0]
    gc.disable()
    try:
        f(keys[-1])  # evicts the entry of Box(0)
        assert key_ref() is None, "evicted key still alive after the evicting call"
        assert value_ref() is None, "evicted value still alive after the evicting call"
    finally:
        gc.enable()


def test_function_that_clears_the_cache_still_stores_its_result():
    # The store changed while the function ran: the fast path must take the full insert.
    @cache(max_size=4)
    def f(x):
        f.cache_clear()
        return x + 1

    assert f(1) == 2
    assert f.cache_info().current_size == 1
    assert f(1) == 2
    assert f.cache_info().hits == 1


def test_reentrant_call_storing_the_same_key_leaves_one_entry():
    depth = []

    @cache(max_size=4)
    def f(x):
        depth.append(x)
        if len(depth) == 1:
            inner = f(x)  # misses too (the outer call has not stored yet) and stores first
            assert inner == ("call", 2)
        return ("call", len(depth))

    assert f(7) == ("call", 2)
    assert f.cache_info().current_size == 1, "the outer insert must update, not duplicate"
    assert f(7) == ("call", 2)
    assert len(depth) == 2


def test_raising_function_on_the_fast_miss_path_caches_nothing():
    calls = []

    @cache(max_size=4)
    def f(x):
        calls.append(x)
        raise KeyError(x)

    for _ in range(2):
        with pytest.raises(KeyError):
            f(5)
    assert calls == [5, 5]
    assert f.cache_info().current_size == 0


def test_ttl_zero_fast_miss_path_stores_nothing():
    @cache(max_size=4, ttl=0)
    def f(x):
        return [x]

    assert f(1) == [1]
    assert f(1) == [1]
    info = f.cache_info()
    assert (info.hits, info.misses, info.current_size) == (0, 2, 0)


@pytest.mark.parametrize(
    "keys",
    [
        pytest.param(list(range(-3000, 3000)), id="dense-around-zero"),
        pytest.param([i << 20 for i in range(2000)], id="multiples-of-2**20"),
        pytest.param([i << 40 for i in range(2000)], id="multiples-of-2**40"),
        pytest.param([i * (2**61 - 1) + 3 for i in range(500)], id="equal-python-hashes"),
        pytest.param([-1, -2, 2**61 - 1, 0, 2**64, -(2**64)], id="hash-aliases"),
        pytest.param([str(i) for i in range(3000)], id="strings"),
    ],
)
def test_single_int_keys_with_structured_hashes(keys):
    # Single int/str keys hash by blocks of 16 consecutive values (key.rs): structured keys
    # must still all be stored, found and told apart.
    calls = []

    @cache(max_size=len(keys))
    def f(x):
        calls.append(x)
        return ("v", x)

    for k in keys:
        assert f(k) == ("v", k)
    for k in reversed(keys):
        assert f(k) == ("v", k)
    assert len(calls) == len(keys)
    info = f.cache_info()
    assert (info.hits, info.misses, info.current_size) == (len(keys), len(keys), len(keys))


def test_sliding_window_of_ints_with_evictions_matches_a_plain_model():
    # A large cache churned by dense int ranges (the benchmark's miss pattern) and random
    # keys: every result is right and the bound holds while the index fills, rehashes and
    # reuses erased buckets.
    max_size = 20_000
    computed = []

    @cache(max_size=max_size)
    def f(x):
        computed.append(x)
        return x * 3

    rng = random.Random(5)
    for base in (-max_size, 0, 10**9, 10**9 + max_size // 2):
        for k in range(base, base + max_size):
            assert f(k) == 3 * k
    last = None
    for _ in range(20_000):
        last = rng.randrange(-(10**12), 10**12)
        assert f(last) == 3 * last
    info = f.cache_info()
    assert info.current_size == max_size
    assert info.misses == len(computed)
    # The newest entry sits at the head of the SIEVE list: a hit.
    assert f(last) == 3 * last
    assert f.cache_info().misses == info.misses


def test_big_caches_with_prefetch_hints_keep_every_value_and_sieve_order():
    # Above 2**16 index buckets the miss path issues prefetch hints (python/src/prefetch.rs):
    # for the next victim, and for the next block of consecutive int keys (new and evicted).
    # Hints must change nothing: ints (ascending, block starts and not, negative, huge), strs
    # and tuples all come back right, and an all-miss run keeps exactly the newest max_size.
    size = 70_000
    calls = []

    @cache(max_size=size)
    def f(x):
        calls.append(x)
        return ("v", x)

    keys = list(range(-size, 2 * size)) + [2**62 + i for i in range(0, 64, 3)]
    keys += [str(i) for i in range(1000)] + [(i, i) for i in range(1000)]
    for k in keys:
        assert f(k) == ("v", k)
    assert len(calls) == len(keys)
    info = f.cache_info()
    assert (info.hits, info.misses, info.current_size) == (0, len(keys), size)
    newest = keys[-size:]
    calls.clear()
    for k in reversed(newest):
        assert f(k) == ("v", k)
    assert calls == [], "an entry among the newest max_size was evicted"
    assert f(keys[-size - 1]) == ("v", keys[-size - 1])
    assert calls == [keys[-size - 1]], "an entry older than the newest max_size was kept"
