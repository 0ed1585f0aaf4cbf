"""Reentrancy: Python code (recursion, __eq__, __hash__, __del__, other threads) that calls the
cache while a lookup or an insert is in progress must neither crash nor be silently ignored.

Behaviour both backends share is tested over both in test_both_backends.py."""

from __future__ import annotations

import gc
import sys
import threading

import pytest

from warp_cache import cache


def test_recursion_with_evictions():
    @cache(max_size=3)
    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    assert fib(60) == 1548008755920
    assert fib.cache_info().current_size <= 3


def test_key_eq_that_calls_the_cached_function():
    @cache(max_size=16)
    def f(key):
        return ("value", key.tag) if isinstance(key, Key) else ("int", key)

    class Key:
        def __init__(self, tag):
            self.tag = tag

        def __hash__(self):
            return 1

        def __eq__(self, other):
            # Reenters the cache with other keys while the outer lookup compares.
            assert f(12345) == ("int", 12345)
            assert f(self.tag) == ("int", self.tag)
            return isinstance(other, Key) and other.tag == self.tag

    assert f(Key(1)) == ("value", 1)
    assert f(Key(1)) == ("value", 1), "hit after the reentrant __eq__"
    assert f(Key(2)) == ("value", 2)
    assert f(Key(2)) == ("value", 2)
    assert f.cache_info().current_size <= 16


def test_key_eq_that_clears_the_cache():
    calls = []

    @cache(max_size=16)
    def f(key):
        calls.append(key.tag)
        return len(calls)

    class Key:
        clear_on_eq = False

        def __init__(self, tag):
            self.tag = tag

        def __hash__(self):
            return 3

        def __eq__(self, other):
            if Key.clear_on_eq:
                f.cache_clear()
            return isinstance(other, Key) and other.tag == self.tag

    assert f(Key("a")) == 1
    assert f(Key("a")) == 1
    Key.clear_on_eq = True
    # The matching entry is cleared by __eq__ itself: the lookup must not serve it.
    assert f(Key("a")) == 2
    assert calls == ["a", "a"]


def test_key_hash_that_calls_the_cached_function():
    @cache(max_size=8)
    def f(x):
        return x if not isinstance(x, Key) else ("k", x.v)

    class Key:
        def __init__(self, v):
            self.v = v

        def __hash__(self):
            f(self.v)
            return hash(self.v)

        def __eq__(self, other):
            return isinstance(other, Key) and other.v == self.v

    assert f(Key(5)) == ("k", 5)
    assert f(Key(5)) == ("k", 5)


def test_evicted_value_whose_del_calls_the_cached_function():
    log = []
    errors = []

    class Value:
        def __init__(self, n):
            self.n = n

        def __del__(self):
            try:
                log.append(f(("from-del", self.n)))
            except BaseException as exc:  # recorded: __del__ exceptions are otherwise hidden
                errors.append(exc)

    @cache(max_size=2)
    def f(x):
        if isinstance(x, tuple):
            return x
        return Value(x)

    for i in range(20):
        f(i)
    gc.collect()
    assert errors == []
    assert len(log) >= 15, "evicted values were dropped outside the store and could call it"
    assert f.cache_info().current_size <= 2
    f.cache_clear()
    gc.collect()
    assert errors == []


def test_value_del_calling_cache_clear_during_clear():
    errors = []

    class Value:
        def __del__(self):
            try:
                f.cache_clear()
                f(-1)
            except BaseException as exc:
                errors.append(exc)

    @cache(max_size=4)
    def f(x):
        return Value() if x >= 0 else None

    for i in range(4):
        f(i)
    f.cache_clear()
    gc.collect()
    assert errors == []
    assert f.cache_info().current_size <= 1


def test_cache_clear_from_another_thread_while_a_lookup_runs_eq():
    """A clear that returned has taken effect, even for a lookup that was inside __eq__."""
    entered = threading.Event()
    release = threading.Event()
    calls = []

    class Key:
        block = False

        def __init__(self, tag):
            self.tag = tag

        def __hash__(self):
            return 11

        def __eq__(self, other):
            if Key.block:
                entered.set()
                assert release.wait(10)
            return isinstance(other, Key) and other.tag == self.tag

    @cache(max_size=8)
    def f(key):
        calls.append(key.tag)
        return object()

    first = f(Key("x"))
    Key.block = True
    result = {}

    def lookup():
        result["value"] = f(Key("x"))

    worker = threading.Thread(target=lookup)
    worker.start()
    assert entered.wait(10)
    f.cache_clear()  # must not deadlock, must not wait for the lookup
    assert f.cache_info().current_size == 0
    Key.block = False
    # Reuse the cleared slot for another key before the lookup resumes: its reference must
    # be seen as stale, not as a pointer to whatever lives in that slot now.
    other = f(Key("y"))
    release.set()
    worker.join(10)
    assert not worker.is_alive()
    assert result["value"] is not first, "the cleared entry was not served"
    assert result["value"] is not other, "a reused slot was not mistaken for the old entry"
    assert calls == ["x", "y", "x"]
    assert f.cache_info().current_size == 2


def test_insert_while_eq_changes_the_store():
    """An insert whose duplicate check runs __eq__ that mutates the store stays consistent."""
    calls = []

    class Key:
        mutate = False

        def __init__(self, tag):
            self.tag = tag

        def __hash__(self):
            return 5

        def __eq__(self, other):
            if Key.mutate:
                Key.mutate = False
                for i in range(10):
                    f(("filler", i))
            return isinstance(other, Key) and other.tag == self.tag

    @cache(max_size=4)
    def f(key):
        calls.append(key)
        if isinstance(key, Key) and key.tag == "b":
            Key.mutate = True  # the insert of "b" compares against "a" and mutates
        return key

    f(Key("a"))
    f(Key("b"))
    info = f.cache_info()
    assert info.current_size <= 4
    for i in range(10):
        f(("filler", i))
    assert f.cache_info().current_size <= 4


def test_errors_are_ordinary_exceptions_never_panics():
    """Every failure surfaces as an Exception subclass (a Rust panic would be a
    BaseException-derived PanicException)."""

    @cache(max_size=2)
    def f(*args, **kwargs):
        return args

    failures = []
    for call in (
        lambda: f([1]),
        lambda: f(x=[1]),
        lambda: cache(max_size=2**62)(len),
        lambda: cache(ttl=float("nan")),
        lambda: f.__get__(1, int)(1, [2]),
    ):
        try:
            call()
        except Exception as exc:
            failures.append(type(exc))
    assert len(failures) == 5
    assert all(issubclass(t, Exception) for t in failures)


def test_deep_recursion_reports_recursion_error():
    @cache(max_size=100000)
    def depth(n):
        return 0 if n == 0 else depth(n - 1) + 1

    old = sys.getrecursionlimit()
    sys.setrecursionlimit(200)
    try:
        with pytest.raises(RecursionError):
            depth(10_000)
    finally:
        sys.setrecursionlimit(old)
    assert depth(50) == 50
