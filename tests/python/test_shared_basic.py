"""Shared backend (backend="shared"), one process: the decorator's contract.

Every test runs with its own WARP_CACHE_DIR (conftest.py). Behaviour both backends share is
tested over both in test_both_backends.py."""

from __future__ import annotations

import asyncio
import functools
import os
import stat
import sys
import threading

import pytest

from shared_util import cache_files

from warp_cache import cache


def shared(**kwargs):
    return cache(backend="shared", **kwargs)


class Point:
    """Module level, so instances pickle (a method's ``self`` is part of its key)."""

    calls = 0

    def __init__(self, x):
        self.x = x

    @shared()
    def scaled(self, factor):
        Point.calls += 1
        return self.x * factor


def test_methods_bind_and_self_is_part_of_the_key():
    Point.calls = 0
    a, b, a_again = Point(2), Point(3), Point(2)
    assert a.scaled(10) == 20 and b.scaled(10) == 30
    assert a.scaled(10) == 20
    # An equal instance pickles to the same bytes: the same key.
    assert a_again.scaled(10) == 20
    assert Point.calls == 2
    assert Point.scaled(a, 10) == 20


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


@pytest.mark.parametrize("max_size", [2**32, 2**40, 2**31 + 1])
def test_max_size_beyond_the_layout_fails_at_decoration(max_size):
    with pytest.raises(ValueError, match="max_size"):

        @shared(max_size=max_size)
        def f(x):
            return x


def test_a_table_larger_than_the_filesystem_falls_back_at_decoration(warp_cache_dir, monkeypatch):
    # Format 4 makes only the header, table and slots real at decoration (80 B per entry of
    # max_size); entries take space as they are stored. When not even that fits (the "tiny
    # /dev/shm" case), the function is cached in this process with one RuntimeWarning naming
    # the cause, and WARP_CACHE_STRICT=1 makes it the error instead. Never a SIGBUS later.
    st = os.statvfs(warp_cache_dir)
    free = st.f_bavail * st.f_frsize
    fixed_bytes_per_entry = 64 + 16
    max_size = min(2**31, (free * 2) // fixed_bytes_per_entry + 1)
    if max_size * fixed_bytes_per_entry <= free:
        pytest.skip("the filesystem has more free space than the largest table")
    with pytest.warns(RuntimeWarning, match="not enough space.*max_size") as caught:

        @shared(max_size=max_size)
        def f(x):
            return x * 2

    assert len(caught) == 1
    assert f(21) == 42 and f(21) == 42
    assert f.cache_info().hits == 1
    assert "not enough space" in f.cache_info().fallback
    assert os.listdir(warp_cache_dir) == [], "nothing left behind"
    monkeypatch.setenv("WARP_CACHE_STRICT", "1")
    with pytest.raises(MemoryError, match="not enough space.*max_size"):

        @shared(max_size=max_size)
        def g(x):
            return x

    assert os.listdir(warp_cache_dir) == [], "nothing left behind"


def test_a_budget_larger_than_the_filesystem_reserves_nothing(warp_cache_dir):
    # max_bytes (and the limits) bound the file; they are not reserved: a budget of twice the
    # free space decorates, and the files hold only the fixed part until entries arrive.
    st = os.statvfs(warp_cache_dir)
    free = st.f_bavail * st.f_frsize
    budget = min(2**40, free * 2)

    @shared(max_size=1000, max_bytes=budget, max_value_size=2**30)
    def f(x):
        return x

    assert f(3) == 3 and f(3) == 3
    assert f.cache_info().hits == 1
    assert f.cache_parameters()["max_bytes"] == budget // 16 * 16
    files = f._shared_files()
    allocated = os.stat(files["data"]).st_blocks * 512
    assert allocated < 1 << 20, allocated


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


def test_reentrancy_from_inside_key_pickling():
    # Recursion alone (no pickling hook): test_both_backends.py::test_recursive_function.
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


def test_async_oversize_values_are_returned_and_counted():
    # Exceptions of async calls: test_both_backends.py.
    calls = []

    @shared(max_value_size=16)
    async def f(x):
        calls.append(x)
        return "y" * x

    async def main():
        assert await f(1) == "y"
        assert await f(1) == "y"
        assert await f(100) == "y" * 100
        assert await f(100) == "y" * 100

    asyncio.run(main())
    assert calls == [1, 100, 100]
    info = f.cache_info()
    assert (info.hits, info.oversize_skips) == (1, 2)


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
    # One entry: key and value words in one 32-byte extent; the heap grew by its first
    # 64 KiB step.
    assert f._shared_diagnostics() == {
        "resets": 0,
        "last_reset_reason": None,
        "heap_compactions": 0,
        "heap_bump_bytes": 32,
        "heap_committed_bytes": 64 << 10,
    }
    assert f._shared_name.startswith(f"{__name__}.") and "test_hidden_diagnostics" in f._shared_name
    assert not f._is_async and f._func(4) == 4
    assert functools.partial(f, 2)() == 2
