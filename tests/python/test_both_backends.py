"""The decorator's contract where both backends promise the same: each test runs once with
``backend="memory"`` and once with ``backend="shared"`` (the ``backend`` fixture of
conftest.py, which gives the shared run its own WARP_CACHE_DIR).

Branches on ``backend`` mark where the backends truly differ: a shared hit is an unpickled
copy (never the object the miss returned), its CacheInfo has ``oversize_skips``, and its
files can be checked with ``_shared_validate``. Tests of one backend only stay in
test_memory_*.py and test_shared_*.py."""

from __future__ import annotations

import asyncio
import copy
import inspect
import pickle
import random
import sys
import threading
import time

import pytest

import warp_cache
from warp_cache import Backend, CacheInfo, cache

#: The ``backend=`` spellings that select each backend.
SPELLINGS = {
    "memory": {"name": "memory", "int": 0, "enum": Backend.MEMORY},
    "shared": {"name": "shared", "int": 1, "enum": Backend.SHARED},
}

#: The type of a cached (sync) function of each backend.
CACHED_TYPES = {"memory": warp_cache.CachedFunction, "shared": warp_cache.SharedCachedFunction}


def expected_info(backend, hits, misses, max_size, current_size):
    """The counts a backend reports with no oversize skips, and its `oversize_skips` (the
    memory backend has no such counter; the shared one reports 0), to compare with
    [`counts`]."""
    return (hits, misses, max_size, current_size, None if backend == "memory" else 0)


def counts(info):
    """A `CacheInfo`'s tuple and its `oversize_skips` (outside the tuple)."""
    assert isinstance(info, CacheInfo) and len(info) == 4
    return (*info, info.oversize_skips)


def validate(f, backend):
    """The shared backend's file check; the memory backend has no files."""
    if backend == "shared":
        f._shared_validate()


def recorder(backend, **options):
    """A cached function that returns how many times it ran, and the list of its calls."""
    calls = []

    @cache(backend=backend, **options)
    def f(*args, **kwargs):
        calls.append((args, kwargs))
        return len(calls)

    return f, calls


@cache(max_size=64)
def memory_square(x):
    """Squares x."""
    return x * x


@cache(max_size=64, backend="shared")
def shared_square(x):
    """Squares x."""
    return x * x


#: Module-level cached functions (they pickle by reference), one per backend.
SQUARES = {"memory": memory_square, "shared": shared_square}


class Methods:
    """Module level, so its cached methods pickle by reference."""

    @cache(max_size=8)
    def memory(self, x):
        return x

    @cache(max_size=8, backend="shared")
    def shared(self, x):
        return x


# --- Selecting the backend, CacheInfo, cache_clear -------------------------------------


@pytest.mark.parametrize("form", ["name", "int", "enum"])
def test_every_spelling_selects_its_backend(backend, form):
    @cache(backend=SPELLINGS[backend][form])
    def f(x):
        return x + 1

    assert type(f) is CACHED_TYPES[backend]
    assert f(1) == 2 and f(1) == 2
    assert counts(f.cache_info()) == expected_info(backend, 1, 1, 128, 1)
    assert f.cache_info().oversize_skips == (None if backend == "memory" else 0)


def test_cache_info_repr_and_clear(backend):
    @cache(max_size=100, backend=backend)
    def compute(n):
        return n**2

    assert compute(5) == 25
    assert compute(5) == 25
    info = compute.cache_info()
    fields = ["hits", "misses", "max_size", "current_size"]
    if backend == "memory":
        assert repr(info) == "CacheInfo(hits=1, misses=1, max_size=100, current_size=1)"
        assert info.oversize_skips is None
        assert tuple(info) == (1, 1, 100, 1)
    else:
        assert repr(info) == "CacheInfo(hits=1, misses=1, max_size=100, current_size=1, oversize_skips=0, space_skips=0, read_retries=0, lock_waits=0, lock_skips=0)"
        assert info.oversize_skips == 0
        assert tuple(info) == (1, 1, 100, 1)
    assert str(info) == repr(info)
    assert (info.hits, info.misses, info.max_size, info.current_size) == (1, 1, 100, 1)
    assert info._fields == tuple(fields)
    compute.cache_clear()
    assert counts(compute.cache_info()) == expected_info(backend, 0, 0, 100, 0)


def test_cache_clear_removes_entries_and_resets_counters(backend):
    calls = []

    @cache(backend=backend)
    def f(x):
        calls.append(x)
        return x

    for x in range(5):
        f(x)
        f(x)
    assert counts(f.cache_info()) == expected_info(backend, 5, 5, 128, 5)
    f.cache_clear()
    assert counts(f.cache_info()) == expected_info(backend, 0, 0, 128, 0)
    f(1)
    assert calls == [0, 1, 2, 3, 4, 1]


# --- Metadata and pickling --------------------------------------------------------------


def test_wraps_metadata(backend):
    f = SQUARES[backend]
    name = f"{backend}_square"
    assert f.__name__ == name
    assert f.__qualname__ == name
    assert f.__module__ == __name__
    assert f.__doc__ == "Squares x."
    assert f.__wrapped__(3) == 9
    assert inspect.signature(f) == inspect.signature(f.__wrapped__)
    assert str(inspect.signature(f)) == "(x)"
    assert not inspect.iscoroutinefunction(f)
    assert inspect.unwrap(f) is f.__wrapped__
    kind = "cached function" if backend == "memory" else "shared cached function"
    assert f"{kind} {name}" in repr(f)

    def annotated(a: int, *, b: str = "x") -> float:
        return 1.0

    wrapped = cache(backend=backend)(annotated)
    assert wrapped.__annotations__ == annotated.__annotations__
    assert str(inspect.signature(wrapped)) == str(inspect.signature(annotated))
    assert "annotated" in repr(wrapped)


def test_pickles_by_reference_like_lru_cache(backend):
    f = SQUARES[backend]
    method = getattr(Methods, backend)
    assert pickle.loads(pickle.dumps(f)) is f
    assert pickle.loads(pickle.dumps(method)) is method
    assert copy.copy(f) is f and copy.deepcopy(f) is f

    @cache(backend=backend)
    def local(x):
        return x

    with pytest.raises((pickle.PicklingError, AttributeError)):
        pickle.dumps(local)


# --- Decoration-time validation ---------------------------------------------------------


@pytest.mark.parametrize("name", ["max_key_size", "max_value_size"])
@pytest.mark.parametrize(
    "value, error",
    [
        (0, ValueError),
        (-1, ValueError),
        (-5, ValueError),
        (2**32, ValueError),
        (2**64, ValueError),
        (1.5, TypeError),
        (1.0, TypeError),
        (True, TypeError),
        ("8", TypeError),
        (None, TypeError),
    ],
)
def test_byte_limits_are_validated_at_decoration(backend, name, value, error):
    with pytest.raises(error, match=name):
        cache(backend=backend, **{name: value})


@pytest.mark.parametrize("ttl", [-1, -0.5, float("nan"), float("inf"), -float("inf"), 10**400])
def test_ttl_must_be_finite_and_non_negative(backend, ttl):
    with pytest.raises(ValueError, match="ttl"):
        cache(backend=backend, ttl=ttl)


@pytest.mark.parametrize("ttl", ["1", True, [1], object()])
def test_ttl_must_be_a_number(backend, ttl):
    with pytest.raises(TypeError, match="ttl"):
        cache(backend=backend, ttl=ttl)


def test_generator_functions_are_rejected(backend):
    def gen(n):
        yield from range(n)

    async def agen(n):
        yield n

    with pytest.raises(TypeError, match="generator"):
        cache(backend=backend)(gen)
    with pytest.raises(TypeError, match="async generator"):
        cache(backend=backend, max_size=4)(agen)


# --- Keys -------------------------------------------------------------------------------


def test_keywords_are_sorted_by_name(backend):
    f, calls = recorder(backend)
    assert f(a=1, b=2) == 1
    assert f(b=2, a=1) == 1, "same entry whatever the keyword order"
    assert f(1, b=2, c=3) == 2
    assert f(1, c=3, b=2) == 2
    assert f(1, b=3, c=2) == 3
    assert len(calls) == 3
    assert f.cache_info().hits == 2


def test_keywords_never_collide_with_positional_lookalikes(backend):
    f, calls = recorder(backend)
    assert f(a=1, b=2) == 1
    assert f("a", 1, "b", 2) == 2
    assert f(x=1) == 3
    assert f((), (("x", 1),)) == 4
    assert f(("x", 1)) == 5
    assert f("x", 1) == 6
    assert f(x=1) == 3
    # Positional + keyword splits that flatten alike stay apart.
    assert f(1, "x", 2, y=3) == 7
    assert f(1, x=2, y=3) == 8
    assert f(1, x=2) == 9
    assert f(1, "x", 2) == 10
    assert len(calls) == 10
    assert f.cache_info().hits == 1


def test_equal_but_not_identical_single_arguments_share_an_entry(backend):
    # The shared backend hashes a key's bytes (fixed-seed ahash), so this holds there
    # whatever the hash seed; across processes: test_shared_processes.py.
    f, calls = recorder(backend)
    big = 10**30
    assert f(big) == 1
    assert f(10**30) == 1, "equal but not identical int"
    s = "".join(["ab", "cd"])
    assert f(s) == 2
    assert f("abcd") == 2
    assert f("abce") == 3
    assert len(calls) == 3
    assert f.cache_info().hits == 2


def test_exceptions_propagate_and_are_not_cached(backend):
    attempts = []

    @cache(backend=backend)
    def flaky(x):
        attempts.append(x)
        if len(attempts) == 1:
            raise KeyError(x)
        if len(attempts) == 2:
            raise ValueError("not yet")
        return x * 10

    with pytest.raises(KeyError):
        flaky(1)
    with pytest.raises(ValueError):
        flaky(1)
    assert flaky(1) == 10
    assert flaky(1) == 10
    assert attempts == [1, 1, 1]
    info = flaky.cache_info()
    assert (info.hits, info.misses, info.current_size) == (1, 3, 1)


# --- Size bound, TTL --------------------------------------------------------------------


@pytest.mark.parametrize("max_size", [5, 8])
def test_eviction_keeps_at_most_max_size_entries(backend, max_size):
    @cache(backend=backend, max_size=max_size)
    def f(x):
        return -x

    for x in range(100):
        assert f(x) == -x
        assert f.cache_info().current_size <= max_size
    info = f.cache_info()
    assert info.current_size == max_size and info.misses == 100
    validate(f, backend)


def test_ttl_zero_is_never_served_from_cache(backend):
    calls = []

    @cache(backend=backend, ttl=0)
    def f(x):
        calls.append(x)
        return x

    for _ in range(3):
        assert f(1) == 1
    assert calls == [1, 1, 1]
    info = f.cache_info()
    assert (info.hits, info.misses, info.current_size) == (0, 3, 0)


def test_ttl_expires_entries(backend):
    calls = []

    @cache(backend=backend, ttl=0.2)
    def f(x):
        calls.append(x)
        return len(calls)

    assert f("a") == 1
    assert f("a") == 1
    assert len(calls) == 1
    time.sleep(0.3)
    assert f("a") == 2, "expired entries are recomputed"
    assert len(calls) == 2
    assert f.cache_info().current_size == 1
    assert f.cache_info().hits == 1 and f.cache_info().misses == 2


# --- Recursion, threads ------------------------------------------------------------------


def test_recursive_function(backend):
    @cache(backend=backend, max_size=1000)
    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    assert fib(200) == 280571172992510140037611932413038677189525
    info = fib.cache_info()
    assert info.misses == 201 and info.current_size == 201
    assert fib(90) == 2880067194370816120, "a hit"
    assert fib.cache_info().misses == 201


def run_threads(target, args_list):
    threads = [threading.Thread(target=target, args=args) for args in args_list]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_eight_threads_hammering_one_function(backend):
    max_size = 64
    calls_per_thread = 4000
    computed = []

    @cache(backend=backend, max_size=max_size)
    def f(x, y=0):
        computed.append(x)  # atomic; no lock: the shared backend must fingerprint the closure
        return (x, y, x * 31 + y)

    errors = []
    sizes = []
    start = threading.Barrier(8)

    def hammer(seed):
        rng = random.Random(seed)
        start.wait()
        try:
            for i in range(calls_per_thread):
                x = int(rng.paretovariate(1.2)) % 200
                if i % 3 == 0:
                    result = f(x, y=1)
                    expected = (x, 1, x * 31 + 1)
                elif i % 3 == 1:
                    result = f(x, 1)
                    expected = (x, 1, x * 31 + 1)
                else:
                    result = f(x)
                    expected = (x, 0, x * 31)
                if result != expected:
                    errors.append((x, result, expected))
                if i % 97 == 0:
                    sizes.append(f.cache_info().current_size)
                if seed == 0 and i % 1000 == 999:
                    f.cache_clear()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    run_threads(hammer, [(seed,) for seed in range(8)])
    assert errors == []
    assert max(sizes) <= max_size
    info = f.cache_info()
    assert info.current_size <= max_size
    validate(f, backend)
    # Counters restart at each clear (thread 0 clears 4 times); count from a quiet start.
    f.cache_clear()

    def count_calls(seed):
        try:
            for i in range(2000):
                x = (i * 7 + seed) % 100
                assert f(x) == (x, 0, x * 31)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    run_threads(count_calls, [(seed,) for seed in range(8)])
    assert errors == []
    info = f.cache_info()
    assert info.hits + info.misses == 8 * 2000
    assert info.current_size <= max_size
    validate(f, backend)


# --- Async ------------------------------------------------------------------------------


def test_async_detected_at_decoration_and_hits_without_awaiting(backend):
    calls = []

    @cache(backend=backend, max_size=256)
    async def fetch_user(user_id: int) -> dict:
        calls.append(user_id)
        await asyncio.sleep(0.01)
        return {"id": user_id}

    # CPython 3.9's inspect recognizes only plain functions (an lru_cache wrapper of an async
    # function is not one there either); from 3.10 it accepts function-like objects.
    if sys.version_info >= (3, 10):
        assert inspect.iscoroutinefunction(fetch_user)
    assert asyncio.iscoroutinefunction(fetch_user)
    assert fetch_user.__name__ == "fetch_user"

    async def main():
        first = await fetch_user(42)
        hit = fetch_user(42)
        assert inspect.isawaitable(hit)
        second = await hit
        return first, second

    first, second = asyncio.run(main())
    assert first == second == {"id": 42} and type(second) is dict
    if backend == "memory":
        assert second is first, "a memory hit is the object the miss returned"
    else:
        assert second is not first, "a shared hit is an unpickled copy"
    assert calls == [42]
    info = fetch_user.cache_info()
    assert (info.hits, info.misses, info.current_size) == (1, 1, 1)


def test_async_single_flight_shares_one_computation(backend):
    calls = []

    @cache(backend=backend)
    async def slow(x):
        calls.append(x)
        await asyncio.sleep(0.02)
        return x * 2

    async def main():
        results = await asyncio.gather(*(slow(3) for _ in range(10)), slow(4))
        assert results == [6] * 10 + [8]
        assert sorted(calls) == [3, 4], "one computation per key, concurrent awaits shared it"
        info = slow.cache_info()
        assert info.hits + info.misses == 11 and info.misses == 11
        assert info.current_size == 2
        assert await slow(3) == 6
        assert slow.cache_info().hits == 1

    asyncio.run(main())


def test_async_exceptions_are_shared_by_waiters_and_not_cached(backend):
    calls = []

    @cache(backend=backend)
    async def flaky(x):
        calls.append(x)
        await asyncio.sleep(0.01)
        if len(calls) <= 2:
            raise ValueError("first attempts fail")
        return x

    async def main():
        with pytest.raises(ValueError):
            await flaky(1)
        assert calls == [1]
        results = await asyncio.gather(flaky(1), flaky(1), flaky(1), return_exceptions=True)
        assert all(isinstance(r, ValueError) for r in results)
        assert calls == [1, 1], "the waiters shared the leader's exception"
        assert await flaky(1) == 1
        assert calls == [1, 1, 1]
        assert await flaky(1) == 1
        assert calls == [1, 1, 1], "a hit"

    asyncio.run(main())
