"""Decoration-time validation, huge sizes, TTL.

Behaviour both backends share is tested over both in test_both_backends.py."""

from __future__ import annotations

import resource
from fractions import Fraction

import pytest

from warp_cache import cache
from warp_cache._warp_cache import MEMORY_MAX_SIZE_LIMIT


def identity(x):
    return x


@pytest.mark.parametrize("max_size", [0, -1, -(2**70)])
def test_max_size_must_be_positive(max_size):
    with pytest.raises(ValueError, match="max_size must be a positive int"):
        cache(max_size=max_size)


@pytest.mark.parametrize("max_size", [True, False, 1.5, "10", None, [3]])
def test_max_size_must_be_an_int(max_size):
    with pytest.raises(TypeError, match="max_size must be a positive int"):
        cache(max_size=max_size)


def test_max_size_accepts_int_likes():
    class Index:
        def __index__(self):
            return 3

    f = cache(max_size=Index())(identity)
    assert f.cache_info().max_size == 3


def test_ttl_accepts_real_numbers():
    for ttl in (1, 2.5, Fraction(1, 2), 0):
        cache(ttl=ttl)(identity)


@pytest.mark.parametrize("backend", ["MEMORY", "disk", "", 2, -1])
def test_unknown_backend_values(backend):
    with pytest.raises(ValueError, match="backend"):
        cache(backend=backend)


@pytest.mark.parametrize("backend", [None, 1.0, True, b"memory"])
def test_backend_types(backend):
    with pytest.raises(TypeError, match="backend"):
        cache(backend=backend)


def test_errors_happen_at_decoration_not_at_call():
    with pytest.raises(ValueError):

        @cache(max_size=0)
        def never(x):
            return x


def test_huge_max_size_allocates_lazily():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    f = cache(max_size=10**9)(identity)
    for i in range(1000):
        f(i)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert f.cache_info().current_size == 1000
    assert f.cache_info().max_size == 10**9
    assert after - before < 64 * 1024, "KiB: nothing proportional to max_size was allocated"
    f.cache_clear()


def test_max_size_limit_of_the_memory_backend():
    assert MEMORY_MAX_SIZE_LIMIT == 2**32 - 2
    cache(max_size=MEMORY_MAX_SIZE_LIMIT)(identity)
    for too_big in (MEMORY_MAX_SIZE_LIMIT + 1, 2**62, 2**200):
        with pytest.raises(ValueError, match="at most"):
            cache(max_size=too_big)(identity)


def test_tiny_positive_ttl_is_not_the_never_store_mode():
    @cache(ttl=1e-12)
    def f(x):
        return x

    f(1)
    assert f.cache_info().current_size == 1, "stored (then instantly stale), unlike ttl=0"
