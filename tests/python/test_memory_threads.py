"""Many threads on one cached function: results always correct, counters consistent, the
size bound holds."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor

from warp_cache import cache


def test_thread_pool_map_from_the_spec():
    @cache(max_size=256)
    def work(x):
        return x * x

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(work, range(100)))
    assert results == [x * x for x in range(100)]


def test_eight_threads_hammering_one_function():
    max_size = 64
    calls_per_thread = 4000
    computed = []
    computed_lock = threading.Lock()

    @cache(max_size=max_size)
    def f(x, y=0):
        with computed_lock:
            computed.append(x)
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

    threads = [threading.Thread(target=hammer, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert max(sizes) <= max_size
    info = f.cache_info()
    assert info.current_size <= max_size
    # Counters restart at each clear (thread 0 clears 4 times); count from a quiet start.
    f.cache_clear()

    def count_calls():
        for i in range(500):
            f(i % 100)

    threads = [threading.Thread(target=count_calls) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    info = f.cache_info()
    assert info.hits + info.misses == 8 * 500
    assert info.current_size <= max_size


def test_threads_with_user_keys_and_reentrant_eq():
    class Key:
        def __init__(self, v):
            self.v = v

        def __hash__(self):
            return self.v % 7

        def __eq__(self, other):
            return isinstance(other, Key) and self.v == other.v

    @cache(max_size=32)
    def f(key):
        return key.v * 2

    errors = []

    def run(seed):
        rng = random.Random(seed)
        for _ in range(3000):
            v = rng.randrange(100)
            if f(Key(v)) != v * 2:
                errors.append(v)

    threads = [threading.Thread(target=run, args=(s,)) for s in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    info = f.cache_info()
    assert info.hits + info.misses == 8 * 3000
    assert info.current_size <= 32
