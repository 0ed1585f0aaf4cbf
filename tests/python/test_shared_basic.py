"""Shared backend (backend="shared"), one process: the decorator's contract.

Every test runs with its own WARP_CACHE_DIR (conftest.py)."""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import pickle
import stat
import sys
import threading
import time

import pytest

from shared_util import cache_files

import warp_cache
from warp_cache import Backend, CacheInfo, cache


def shared(**kwargs):
    return cache(backend="shared", **kwargs)


@shared(max_size=64)
def module_level_square(x):
    """Squares x."""
    return x * x


class Point:
    """Module level, so instances pickle (a method's ``self`` is part of its key)."""

    calls = 0

    def __init__(self, x):
        self.x = x

    @shared()
    def scaled(self, factor):
        Point.calls += 1
        return self.x * factor


@pytest.mark.parametrize("backend", ["shared", 1, Backend.SHARED])
def test_every_spelling_selects_the_shared_backend(backend):
    @cache(backend=backend)
    def f(x):
        return x + 1

    assert type(f) is warp_cache.SharedCachedFunction
    assert f(1) == 2 and f(1) == 2
    assert f.cache_info() == CacheInfo(1, 1, 128, 1, 0)


def test_cache_info_has_oversize_skips_and_the_memory_repr_is_unchanged():
    @shared(max_size=100)
    def compute(n):
        return n**2

    compute(5)
    compute(5)
    info = compute.cache_info()
    assert repr(info) == "CacheInfo(hits=1, misses=1, max_size=100, current_size=1, oversize_skips=0)"
    assert tuple(info) == (1, 1, 100, 1, 0) and info.oversize_skips == 0
    assert info._fields == ["hits", "misses", "max_size", "current_size", "oversize_skips"]

    @cache(max_size=100)
    def memory(n):
        return n**2

    memory(5)
    memory(5)
    assert repr(memory.cache_info()) == "CacheInfo(hits=1, misses=1, max_size=100, current_size=1)"


def test_cache_clear_removes_entries_and_resets_counters():
    calls = []

    @shared()
    def f(x):
        calls.append(x)
        return x

    for x in range(5):
        f(x)
        f(x)
    assert f.cache_info() == CacheInfo(5, 5, 128, 5, 0)
    f.cache_clear()
    assert f.cache_info() == CacheInfo(0, 0, 128, 0, 0)
    f(1)
    assert calls == [0, 1, 2, 3, 4, 1]


def test_eviction_keeps_at_most_max_size_entries():
    @shared(max_size=8)
    def f(x):
        return -x

    for x in range(100):
        assert f(x) == -x
    info = f.cache_info()
    assert info.current_size == 8 and info.misses == 100
    f._shared_validate()


def test_keywords_are_sorted_and_never_confused_with_positional_arguments():
    calls = []

    @shared()
    def f(*args, **kwargs):
        calls.append((args, kwargs))
        return (args, tuple(sorted(kwargs.items())))

    assert f(a=1, b=2) == f(b=2, a=1)
    assert len(calls) == 1
    # Calls whose positional arguments look like the keywords get their own entries.
    f("a", 1, "b", 2)
    f(1, x=2)
    f(1, "x", 2)
    f(x=1)
    f("x", 1)
    f((), (("x", 1),))
    assert len(calls) == 7
    assert f.cache_info().hits == 1


def test_exceptions_propagate_and_are_not_cached():
    calls = []

    @shared()
    def f(x):
        calls.append(x)
        if len(calls) == 1:
            raise KeyError(x)
        return x

    with pytest.raises(KeyError):
        f(1)
    assert f(1) == 1 and f(1) == 1
    assert calls == [1, 1]


def test_methods_bind_and_self_is_part_of_the_key():
    Point.calls = 0
    a, b, a_again = Point(2), Point(3), Point(2)
    assert a.scaled(10) == 20 and b.scaled(10) == 30
    assert a.scaled(10) == 20
    # An equal instance pickles to the same bytes: the same key.
    assert a_again.scaled(10) == 20
    assert Point.calls == 2
    assert Point.scaled(a, 10) == 20


def test_functools_metadata_and_pickling_by_reference():
    f = module_level_square
    assert f.__wrapped__(3) == 9
    assert f.__name__ == "module_level_square" and f.__doc__ == "Squares x."
    assert f.__qualname__ == "module_level_square" and f.__module__ == __name__
    assert str(inspect.signature(f)) == "(x)"
    assert pickle.loads(pickle.dumps(f)) is f
    assert "shared cached function module_level_square" in repr(f)


def test_oversize_keys_and_values_are_computed_returned_not_cached_and_counted():
    calls = []

    @shared(max_key_size=32, max_value_size=64)
    def f(key, size):
        calls.append(key)
        return "v" * size

    big_key = "k" * 100
    for _ in range(3):
        assert f(big_key, 1) == "v"
    assert f.cache_info().oversize_skips == 3 and f.cache_info().hits == 0
    for _ in range(3):
        assert f("small", 1000) == "v" * 1000
    assert f.cache_info().oversize_skips == 6
    assert len(calls) == 6
    # Within limits: cached as usual.
    f("small", 10)
    f("small", 10)
    info = f.cache_info()
    assert (info.hits, info.current_size, info.oversize_skips) == (1, 1, 6)


def test_unpicklable_results_are_returned_and_not_cached():
    calls = []

    @shared()
    def f(x):
        calls.append(x)
        return threading.Lock() if x == "lock" else (lambda: x)

    first = f("lock")
    second = f("lock")
    assert type(first) is type(threading.Lock()) and first is not second
    assert callable(f("fn"))
    assert len(calls) == 3
    info = f.cache_info()
    assert (info.hits, info.current_size, info.oversize_skips) == (0, 0, 0)


def test_unpicklable_arguments_raise_type_error_before_calling():
    calls = []

    @shared()
    def f(x, **kwargs):
        calls.append(x)
        return 1

    with pytest.raises(TypeError, match="positional argument 0.*cannot be pickled"):
        f(threading.Lock())
    with pytest.raises(TypeError, match="keyword argument 'y'"):
        f(x=1, y=threading.Lock())
    assert calls == []


def test_unhashable_but_picklable_arguments_are_cached():
    calls = []

    @shared()
    def f(items, mapping):
        calls.append(1)
        return sum(items) + sum(mapping.values())

    assert f([1, 2, 3], {"a": 4}) == 10
    assert f([1, 2, 3], {"a": 4}) == 10
    assert len(calls) == 1


def test_ttl_zero_never_serves():
    calls = []

    @shared(ttl=0)
    def f(x):
        calls.append(x)
        return x

    for _ in range(3):
        assert f(1) == 1
    assert len(calls) == 3
    info = f.cache_info()
    assert (info.hits, info.current_size) == (0, 0)


def test_ttl_expires_entries():
    calls = []

    @shared(ttl=0.2)
    def f(x):
        calls.append(x)
        return x

    f(1)
    f(1)
    assert len(calls) == 1
    time.sleep(0.3)
    f(1)
    assert len(calls) == 2


@pytest.mark.parametrize("name", ["max_key_size", "max_value_size"])
@pytest.mark.parametrize(
    "value, error",
    [
        (0, ValueError),
        (-1, ValueError),
        (2**32, ValueError),
        (2**64, ValueError),
        (1.5, TypeError),
        (True, TypeError),
        ("8", TypeError),
        (None, TypeError),
    ],
)
def test_bad_byte_limits_fail_at_decoration(name, value, error):
    with pytest.raises(error, match=name):
        shared(**{name: value})


@pytest.mark.parametrize(
    "ttl, error",
    [(-1, ValueError), (float("nan"), ValueError), (float("inf"), ValueError), ("1", TypeError), (True, TypeError)],
)
def test_bad_ttl_fails_at_decoration(ttl, error):
    with pytest.raises(error, match="ttl"):
        shared(ttl=ttl)


@pytest.mark.parametrize("max_size", [2**32, 2**40, 2**31 + 1])
def test_max_size_beyond_the_layout_fails_at_decoration(max_size):
    with pytest.raises(ValueError, match="max_size"):

        @shared(max_size=max_size)
        def f(x):
            return x


def test_region_larger_than_the_filesystem_fails_at_decoration(warp_cache_dir):
    # A region a bit larger than the free space (but within the layout's limits): the
    # "full /dev/shm" case, a clear error now rather than a SIGBUS later.
    st = os.statvfs(warp_cache_dir)
    free = st.f_bavail * st.f_frsize
    bytes_per_entry = 48 + 512 + 4096
    max_size = min(2**31, (free * 2) // bytes_per_entry + 1)
    if max_size * bytes_per_entry >= 2**40:
        pytest.skip("the filesystem has more free space than the largest region")
    with pytest.raises(MemoryError, match="not enough space.*max_size"):

        @shared(max_size=max_size)
        def f(x):
            return x

    assert os.listdir(warp_cache_dir) == [], "nothing left behind"


def test_generators_are_rejected():
    def gen():
        yield 1

    with pytest.raises(TypeError, match="generator"):
        shared()(gen)


def test_files_live_in_the_cache_directory_with_private_modes(warp_cache_dir):
    @shared()
    def f(x):
        return x

    f(1)
    files = f._shared_files()
    assert os.path.dirname(files["data"]) == str(warp_cache_dir)
    assert cache_files(warp_cache_dir) == sorted(
        [os.path.basename(files["data"]), os.path.basename(files["lock"])]
    )
    for path in (files["data"], files["lock"]):
        mode = os.stat(path).st_mode
        assert stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(os.stat(warp_cache_dir).st_mode) == 0o700


def test_recursion_and_reentrancy():
    @shared(max_size=512)
    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    assert fib(90) == 2880067194370816120
    assert fib.cache_info().misses == 91

    class Sneaky:
        """Pickling it calls the cached function (reentrancy from inside key building)."""

        def __reduce__(self):
            return (int, (fib(20),))

    @shared()
    def g(obj):
        return fib(10)

    assert g(Sneaky()) == 55 and g(Sneaky()) == 55


def test_threads_share_one_cache_and_counters_add_up():
    @shared(max_size=64)
    def f(x):
        return x * 3

    errors = []

    def work(seed):
        try:
            for i in range(2000):
                x = (i * 7 + seed) % 100
                assert f(x) == x * 3
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    info = f.cache_info()
    assert info.hits + info.misses == 8 * 2000
    f._shared_validate()


def test_async_functions_hit_without_awaiting_and_share_flights():
    calls = []

    @shared()
    async def fetch(x):
        calls.append(x)
        await asyncio.sleep(0.01)
        return {"x": x}

    assert asyncio.iscoroutinefunction(fetch)

    async def main():
        first = await fetch(1)
        hit = fetch(1)
        assert inspect.isawaitable(hit)
        second = await hit
        together = await asyncio.gather(*(fetch(2) for _ in range(5)))
        return first, second, together

    first, second, together = asyncio.run(main())
    assert first == second == {"x": 1} and type(second) is dict
    assert all(r == {"x": 2} for r in together)
    assert calls == [1, 2], "one computation per key, concurrent awaits shared it"
    info = fetch.cache_info()
    assert info.misses == 1 + 5 and info.hits == 1
    assert info.current_size == 2


def test_async_exceptions_are_not_cached_and_oversize_is_counted():
    calls = []

    @shared(max_value_size=16)
    async def f(x):
        calls.append(x)
        if len(calls) == 1:
            raise ValueError("first")
        return "y" * x

    async def main():
        with pytest.raises(ValueError):
            await f(1)
        assert await f(1) == "y"
        assert await f(1) == "y"
        assert await f(100) == "y" * 100
        assert await f(100) == "y" * 100

    asyncio.run(main())
    assert calls == [1, 1, 100, 100]
    assert f.cache_info().oversize_skips == 2


@pytest.mark.skipif(sys.platform != "win32", reason="Windows only: the shared backend is POSIX")
def test_windows_refuses_the_shared_backend_at_decoration():  # pragma: no cover
    with pytest.raises(RuntimeError, match="not available on this platform"):

        @shared()
        def f(x):
            return x


def test_hidden_diagnostics():
    @shared()
    def f(x):
        return x

    f(1)
    assert f._shared_diagnostics() == {"resets": 0, "last_reset_reason": None}
    assert f._shared_name.startswith(f"{__name__}.") and "test_hidden_diagnostics" in f._shared_name
    assert not f._is_async and f._func(4) == 4
    assert functools.partial(f, 2)() == 2
