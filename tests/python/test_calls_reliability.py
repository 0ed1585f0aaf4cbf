"""A cached call must survive what a `functools.lru_cache` call survives:
daemon threads inside cached calls at interpreter exit, deep recursion, Ctrl-C while
a key or value is pickled, and values that can no longer be decoded.

Crashes are checked in child processes (a crash there is a signal exit status, not a dead test
run). A test that takes ``backend`` runs once per backend (the fixture of conftest.py)."""

from __future__ import annotations

import asyncio
import functools
import signal
import sys
import types
from pathlib import Path

import pytest

from shared_util import run_code
from warp_cache import cache


def test_daemon_threads_inside_cached_calls_do_not_crash_interpreter_exit(backend, tmp_path):
    # CPython ends daemon threads that retake the GIL during finalization with
    # pthread_exit; the process used to die with SIGABRT in 3 of 3 runs.
    code = f"""
        import threading, time
        from warp_cache import cache
        f = cache(backend={backend!r})(lambda k: time.sleep(0.001) or k)
        def loop():
            i = 0
            while True:
                f(i % 50)
                i += 1
        for _ in range(2):
            threading.Thread(target=loop, daemon=True).start()
        time.sleep(0.05)
    """
    statuses = [
        run_code(code, tmp_path, check=False, timeout=60).returncode for _ in range(20)
    ]
    described = [
        f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit {rc}" for rc in statuses
    ]
    assert statuses == [0] * 20, described


def test_daemon_threads_inside_refresh_and_single_flight_waits_do_not_crash_exit(
    backend, tmp_path
):
    # cache_refresh calls the function, and a single-flight waiter waits without the GIL:
    # both must let interpreter exit end the thread (pthread_exit) without an abort.
    code = f"""
        import threading, time
        from warp_cache import cache
        f = cache(backend={backend!r})(lambda k: time.sleep(0.002) or k)
        def refresh():
            i = 0
            while True:
                f.cache_refresh(i % 3)
                i += 1
        def same_key():
            while True:
                f.cache_clear()
                f(7)
        for target in (refresh, same_key, same_key):
            threading.Thread(target=target, daemon=True).start()
        time.sleep(0.05)
    """
    statuses = [
        run_code(code, tmp_path, check=False, timeout=60).returncode for _ in range(20)
    ]
    described = [
        f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit {rc}" for rc in statuses
    ]
    assert statuses == [0] * 20, described


RECURSION_SCRIPT = """
    import functools, sys, threading
    from warp_cache import cache

    sys.setrecursionlimit(1_000_000)
    threading.stack_size(8 * 1024 * 1024)
    outcome = []

    @{decorator}
    def down(n):
        return 0 if n == 0 else down(n - 1) + 1

    def run():
        try:
            outcome.append(down({depth}))
        except RecursionError as err:
            outcome.append("RecursionError: " + str(err))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    print(outcome[0])
"""


def recursion_script(backend: str, depth: int) -> str:
    return RECURSION_SCRIPT.format(
        decorator=f"cache(max_size=100_000, backend={backend!r})", depth=depth
    )


@functools.lru_cache(maxsize=None)
def lru_cache_depth_8_mib(cache_dir: Path) -> int:
    """How deep `functools.lru_cache` recurses on an 8 MiB thread stack in this interpreter
    before it segfaults (to within 50 levels): each try is a child process."""
    low, high = 1_000, 60_000
    while high - low > 50:
        middle = (low + high) // 2
        code = RECURSION_SCRIPT.format(decorator="functools.lru_cache(maxsize=None)", depth=middle)
        proc = run_code(code, cache_dir, check=False)
        if proc.returncode == 0 and proc.stdout.strip() == str(middle):
            low = middle
        else:
            assert proc.returncode < 0, (proc.returncode, proc.stdout, proc.stderr)
            high = middle
    return low


# From 3.12 on, CPython bounds C-level recursion with its own counter (which
# sys.setrecursionlimit does not raise): lru_cache then stops with RecursionError after a few
# hundred to a few thousand levels, and so does a cached call (same Py_EnterRecursiveCall).
C_RECURSION_COUNTER = sys.version_info >= (3, 12)


@pytest.mark.skipif(C_RECURSION_COUNTER, reason="3.12+: the C recursion counter binds first")
def test_recursion_reaches_lru_cache_depth(backend, tmp_path_factory, tmp_path):
    # lru_cache's depth differs by version (about 14,500 levels on 3.10.13, 15,850 on 3.11.7,
    # 16,350 on 3.9.18), so it is measured here rather than written down.
    depth = lru_cache_depth_8_mib(tmp_path_factory.getbasetemp())
    assert depth > 5_000
    proc = run_code(recursion_script(backend, depth), tmp_path)
    assert proc.stdout.strip() == str(depth), (depth, proc.stdout)


@pytest.mark.skipif(not C_RECURSION_COUNTER, reason="3.12+ only (before: the test above)")
def test_recursion_reaches_lru_cache_depth_under_the_c_recursion_counter(backend, tmp_path):
    # Both stop with RecursionError here (no crash), so measure both in one process.
    code = f"""
        import functools, sys
        from warp_cache import cache
        sys.setrecursionlimit(1_000_000)

        def deepest(decorate):
            low, high = 1, 100_000
            while high - low > 1:
                middle = (low + high) // 2
                down = decorate(lambda n: 0 if n == 0 else down(n - 1) + 1)
                down.cache_clear()  # a shared cache of the same code is the same cache
                try:
                    down(middle)
                    low = middle
                except RecursionError:
                    high = middle
            return low

        lru = deepest(functools.lru_cache(maxsize=None))
        ours = deepest(lambda f: cache(max_size=100_000, backend={backend!r})(f))
        print(lru, ours)
    """
    lru, ours = map(int, run_code(code, tmp_path).stdout.split())
    assert ours >= lru > 100


def test_recursion_beyond_the_stack_is_a_recursion_error(backend, tmp_path):
    proc = run_code(recursion_script(backend, 300_000), tmp_path)
    assert proc.stdout.startswith("RecursionError: maximum recursion depth exceeded"), proc.stdout


def test_cpython_lru_recursion_fib(backend, tmp_path):
    # CPython's test_lru_recursion with the recursion limit raised, on the main thread; and
    # again after a clear (an emptied shared cache took another path).
    depth = 400 if C_RECURSION_COUNTER else 10_000  # 3.12.1's lru_cache stops at 498
    code = f"""
        import sys
        from warp_cache import cache
        sys.setrecursionlimit(100_000)

        @cache(max_size=100_000, backend={backend!r})
        def fib(n):
            return n if n <= 1 else fib(n - 1) + fib(n - 2)

        first = fib({depth})
        fib.cache_clear()
        again = fib({depth})
        print(first == again, first % 1_000_000_007)
    """
    proc = run_code(code, tmp_path)
    assert proc.stdout.split() == ["True", str(fib_mod(depth, 1_000_000_007))]


def fib_mod(n, modulus):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a % modulus


class RaisesWhenPickled:
    """An object whose pickling raises the given exception type."""

    def __init__(self, exception):
        self.exception = exception

    def __reduce__(self):
        raise self.exception()


NOT_EXCEPTIONS = [KeyboardInterrupt, SystemExit, GeneratorExit, asyncio.CancelledError]


@pytest.mark.parametrize("exception", NOT_EXCEPTIONS, ids=lambda e: e.__name__)
def test_base_exceptions_from_pickling_a_key_propagate_unchanged(exception):
    assert not issubclass(exception, Exception)
    f = cache(backend="shared")(lambda x: "computed")
    with pytest.raises(exception):
        f(RaisesWhenPickled(exception))
    with pytest.raises(exception):
        f(1, option=RaisesWhenPickled(exception))


@pytest.mark.parametrize("exception", NOT_EXCEPTIONS, ids=lambda e: e.__name__)
def test_base_exceptions_from_pickling_a_value_propagate_unchanged(exception):
    f = cache(backend="shared")(lambda x: RaisesWhenPickled(exception))
    with pytest.raises(exception):
        f(1)


def test_an_exception_from_pickling_a_key_is_still_the_cannot_pickle_type_error():
    f = cache(backend="shared")(lambda x: "computed")
    with pytest.raises(TypeError, match="cannot be pickled") as raised:
        f(RaisesWhenPickled(ValueError))
    assert isinstance(raised.value.__cause__, ValueError)


def test_a_value_that_cannot_be_decoded_counts_as_a_miss():
    # Values of a class that no longer exists cannot be unpickled: they are recomputed, so
    # those lookups are misses (they were counted as hits).
    module = types.ModuleType("warp_cache_vanishing_values")
    exec("class Value:\n    def __init__(self, n):\n        self.n = n\n", module.__dict__)
    module.Value.__module__ = module.__name__
    sys.modules[module.__name__] = module
    try:
        computed = []
        value_class = module.Value

        def make(n):
            computed.append(n)
            return value_class(n)

        f = cache(backend="shared")(make)
        for n in range(5):
            f(n)
        assert f.cache_info().misses == 5
        del module.Value  # unpickling the stored values now fails
        for n in range(5):
            f(n)
        info = f.cache_info()
        assert computed == list(range(5)) * 2
        assert (info.hits, info.misses) == (0, 10)
    finally:
        del sys.modules[module.__name__]
