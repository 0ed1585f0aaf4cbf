"""Garbage collection: reference cycles through a cached function (its wrapped function, its
cached keys and values, its __dict__) are collected; entries are released on clear."""

from __future__ import annotations

import gc
import weakref

from warp_cache import cache


def test_recursive_closure_cycle_is_collected():
    def make():
        @cache()
        def fib(n):
            return n if n < 2 else fib(n - 1) + fib(n - 2)

        assert fib(20) == 6765
        return weakref.ref(fib)

    ref = make()
    gc.collect()
    assert ref() is None


def test_cycle_through_a_cached_value_is_collected():
    class Box:
        pass

    def make():
        wrapper = cache()(lambda x: Box())
        box = wrapper(1)
        box.owner = wrapper  # value -> wrapper -> store -> value
        return weakref.ref(wrapper), weakref.ref(box)

    refs = make()
    gc.collect()
    assert [r() for r in refs] == [None, None]


def test_cycle_through_a_cached_key_is_collected():
    class Key:
        def __hash__(self):
            return 1

    def make():
        wrapper = cache()(lambda key: 0)
        key = Key()
        key.owner = wrapper  # key -> wrapper -> store -> key
        wrapper(key)
        return weakref.ref(wrapper), weakref.ref(key)

    refs = make()
    gc.collect()
    assert [r() for r in refs] == [None, None]


def test_cycle_through_the_instance_dict_is_collected():
    def make():
        wrapper = cache()(lambda x: x)
        wrapper.me = wrapper  # wrapper -> __dict__ -> wrapper
        return weakref.ref(wrapper)

    ref = make()
    gc.collect()
    assert ref() is None


def test_async_wrapper_cycle_is_collected():
    import asyncio

    def make():
        @cache()
        async def again(n):
            return n if n == 0 else await again(n - 1)

        assert asyncio.run(again(5)) == 0
        return weakref.ref(again)

    ref = make()
    gc.collect()
    assert ref() is None


def test_clear_releases_values():
    class Value:
        pass

    @cache(max_size=10)
    def f(x):
        return Value()

    refs = [weakref.ref(f(i)) for i in range(10)]
    assert all(r() is not None for r in refs)
    f.cache_clear()
    assert all(r() is None for r in refs), "released at once, without a collection"


def test_evicted_values_are_released():
    class Value:
        pass

    @cache(max_size=2)
    def f(x):
        return Value()

    first = weakref.ref(f(0))
    f(1)
    f(2)
    assert first() is None
