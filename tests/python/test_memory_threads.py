"""Many threads on one cached function: results always correct, counters consistent, the
size bound holds.

Behaviour both backends share is tested over both in test_both_backends.py."""

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
