"""Shared backend hit path: a call with one exact int builds its key in a fixed
array, values of up to 48 bytes are copied to the stack, larger ones through the reusable
buffer, and the buffers stay in place on a hit. These tests pin what those shortcuts must
keep: keys that differ only in type or width never share an entry, values on both sides of
the inline size come back exactly, and calls made while the buffers are in use still work.
"""

from __future__ import annotations

import pytest

from warp_cache import cache


class MyInt(int):
    pass


def counting(**options):
    """A shared-cache identity function and the list of arguments it was computed for."""
    computed = []

    def identity(x):
        computed.append(x)
        return x

    return cache(max_size=256, backend="shared", **options)(identity), computed


@pytest.mark.parametrize(
    "key",
    [0, 1, -1, 255, 256, 65535, 65536, -65536, 2**31, 2**32 + 7]
    + [2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 10**30],
)
def test_int_keys_at_every_width_hit_and_return_the_same_int(key):
    fn, computed = counting()
    assert fn(key) == key
    first = fn(key)
    assert first == key and type(first) is int
    assert computed == [key], "computed once, then a hit"
    # `__call__` goes through tp_call and the generic key encoder: the same bytes, so the
    # same entry as the vectorcall path's fixed-array key.
    assert fn.__call__(key) == key
    assert computed == [key]
    info = fn.cache_info()
    assert (info.hits, info.misses) == (2, 1)


def test_one_argument_keys_that_differ_only_in_type_never_share_an_entry():
    # typed=True: with the default typed=False, True and 1.0 share 1's entry (test_typed.py).
    fn, computed = counting(typed=True)
    keys = [1, True, 1.0, "1", b"1", MyInt(1), (1,), None, 0, False]
    for key in keys:
        fn(key)
    for key in keys:
        result = fn(key)
        assert type(result) is type(key) and result == key
    assert len(computed) == len(keys), "every key computed exactly once"
    info = fn.cache_info()
    assert (info.hits, info.misses) == (len(keys), len(keys))


def test_int_keys_next_to_each_other_stay_apart():
    # Keys whose encodings differ only in the low bytes (the bytes the key's first word and
    # its last word share) or only in the high bytes.
    fn, computed = counting()
    keys = [0x0102, 0x0201, 0x0102 + (1 << 56), 1 << 48, 1 << 47, -(1 << 48)]
    for key in keys:
        assert fn(key) == key
    for key in keys:
        assert fn(key) == key
    assert computed == keys


@pytest.mark.parametrize("length", [0, 1, 30, 40, 42, 43, 44, 47, 48, 60, 200, 3000])
def test_values_on_both_sides_of_the_inline_size_come_back_exactly(length):
    # str and bytes values encode as tag + 4-byte length + data: 43 data bytes is 48 encoded.
    values = {
        "str": "s" * length,
        "bytes": bytes(range(256)) * (length // 256) + bytes(range(length % 256)),
        "tuple": tuple(range(length // 9)),
    }

    calls = []

    @cache(max_size=8, backend="shared")
    def make(kind):
        calls.append(kind)
        return values[kind]

    for hits, kind in enumerate(values, start=1):
        assert make(kind) == values[kind]
        again = make(kind)
        assert again == values[kind] and type(again) is type(values[kind]), kind
        assert make.cache_info().hits == hits, kind
    assert calls == list(values), "each computed once"


def test_pickled_small_values_hit_through_the_full_path():
    # A list needs pickle; a short pickle fits the inline buffer and must still reach the
    # full path's unpickling intact.
    calls = []

    @cache(max_size=8, backend="shared")
    def make(n):
        calls.append(n)
        return list(range(n))

    for n in (0, 1, 3, 30):
        assert make(n) == list(range(n))
        assert make(n) == list(range(n))
        assert type(make(n)) is list
    assert calls == [0, 1, 3, 30]


def test_calls_made_while_the_buffers_are_in_use_still_hit_and_miss_correctly():
    inner_calls = []

    @cache(max_size=64, backend="shared")
    def inner(x):
        inner_calls.append(x)
        return x * 2

    @cache(max_size=64, backend="shared")
    def outer(x):
        # Runs during outer's miss, which holds the reusable buffers: inner's hits and
        # misses use fresh ones.
        return inner(x) + inner(x) + inner(x + 1000)

    assert [outer(x) for x in range(20)] == [4 * x + 2 * (x + 1000) for x in range(20)]
    assert [outer(x) for x in range(20)] == [4 * x + 2 * (x + 1000) for x in range(20)]
    assert sorted(inner_calls) == sorted(list(range(20)) + [x + 1000 for x in range(20)])
    assert inner.cache_info().hits == 20
    assert outer.cache_info().hits == 20
    # And the buffers are free again afterwards: the ordinary hit path works.
    assert inner(5) == 10 and inner.cache_info().hits == 21
