"""How keys are formed and compared: args, kwargs, the keyword marker, hashing and equality
errors, exceptions, and agreement with functools.lru_cache.

Behaviour both backends share is tested over both in test_both_backends.py."""

from __future__ import annotations

import functools

import pytest

from warp_cache import cache


def recorder(**options):
    calls = []

    @cache(**options)
    def f(*args, **kwargs):
        calls.append((args, kwargs))
        return len(calls)

    return f, calls


def test_args_tuple_is_the_key():
    f, calls = recorder()
    assert f(1, 2) == 1
    assert f(1, 2) == 1
    assert f(2, 1) == 2
    assert f(1, 2, 3) == 3
    assert f() == 4 and f() == 4
    assert len(calls) == 4


def test_keyword_and_positional_spellings_of_one_call_are_distinct_like_lru_cache():
    f, calls = recorder()
    f(1)
    f(x=1)
    assert len(calls) == 2


def test_tuple_call_path_and_vectorcall_path_share_entries():
    f, calls = recorder()
    assert f(1, 2, k=3) == 1
    assert f.__call__(1, 2, k=3) == 1, "tp_call path"
    assert functools.partial(f, 1)(2, k=3) == 1
    assert f(*[1, 2], **{"k": 3}) == 1
    assert len(calls) == 1


def test_unhashable_arguments_raise_type_error():
    f, calls = recorder()
    for bad in ([1, 2, 3], {"a": 1}, {1, 2}):
        with pytest.raises(TypeError, match="unhashable"):
            f(bad)
        with pytest.raises(TypeError, match="unhashable"):
            f(1, bad)
        with pytest.raises(TypeError, match="unhashable"):
            f(key=bad)
    assert calls == []
    assert f.cache_info().hits == 0 and f.cache_info().misses == 0
    assert f((1, 2, 3)) == 1 and f("hello") == 2


class HashBoom(Exception):
    pass


class EqBoom(Exception):
    pass


class BadHash:
    def __hash__(self):
        raise HashBoom("from __hash__")


class BadEq:
    def __init__(self, tag):
        self.tag = tag

    def __hash__(self):
        return 7

    def __eq__(self, other):
        raise EqBoom(f"from __eq__ {self.tag}")


def test_raising_hash_propagates_its_own_exception():
    f, _ = recorder()
    with pytest.raises(HashBoom):
        f(BadHash())
    with pytest.raises(HashBoom):
        f(1, BadHash())
    with pytest.raises(HashBoom):
        f(k=BadHash())


def test_raising_eq_propagates_its_own_exception():
    f, calls = recorder()
    first = BadEq("a")
    assert f(first) == 1
    assert f(first) == 1, "identity short-cuts __eq__"
    with pytest.raises(EqBoom):
        f(BadEq("b"))
    assert f(k=first) == 2
    assert f(k=first) == 2
    with pytest.raises(EqBoom):
        f(k=BadEq("c"))
    assert len(calls) == 2


def test_non_exception_results_like_none_are_cached():
    calls = []

    @cache()
    def f(x):
        calls.append(x)
        return None

    assert f(1) is None and f(1) is None
    assert calls == [1]


def test_values_are_returned_by_identity():
    @cache()
    def make(x):
        return [x]

    first = make(1)
    assert make(1) is first


def test_equal_keys_hit_like_lru_cache():
    """Replays the same calls through lru_cache and warp_cache: same hits and misses."""
    calls = [
        (1,), (1,), (1.0,), (True,), (2, 3), (2.0, 3), (True, 3), (1, 3),
        ("a",), ("a",), (b"a",), ((1, 2),), ((1.0, 2),), (None,), (None,),
        (1, "a"), (1.0, "a"), (0.5,), (0.5,), (float("nan"),), (-0.0,), (0.0,),
        (2**70,), (2**70,), (2**70 + 0.0,), ((("nested", 1), 2),), ((("nested", 1.0), 2),),
        (frozenset({1}),), (frozenset({1.0}),), ("é",), ("e\u0301",),
    ]
    lru_misses = []
    warp_misses = []

    @functools.lru_cache(maxsize=None)
    def via_lru(*args):
        lru_misses.append(args)
        return args

    @cache(max_size=1000)
    def via_warp(*args):
        warp_misses.append(args)
        return args

    for args in calls:
        assert via_lru(*args) == via_warp(*args) or args != args
    assert [repr(a) for a in warp_misses] == [repr(a) for a in lru_misses]
    info = via_warp.cache_info()
    assert info.hits + info.misses == len(calls)


def test_mixed_number_types_share_an_entry_in_tuple_keys():
    f, calls = recorder()
    assert f(1, 2) == 1
    assert f(1.0, 2) == 1, "(1, 2) == (1.0, 2), as with lru_cache"
    assert f(1) == 2
    assert f(1.0) == 3, "single-argument int keys are the int itself, as in lru_cache"


def test_user_objects_compared_with_their_eq():
    class Point:
        def __init__(self, x, y):
            self.x, self.y = x, y

        def __hash__(self):
            return hash((self.x, self.y))

        def __eq__(self, other):
            return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)

    f, calls = recorder()
    assert f(Point(1, 2)) == 1
    assert f(Point(1, 2)) == 1
    assert f(Point(2, 1)) == 2
    assert f(p=Point(1, 2)) == 3
    assert f(p=Point(1, 2)) == 3
    assert len(calls) == 3


def test_hash_collisions_are_told_apart():
    class Collide:
        def __init__(self, v):
            self.v = v

        def __hash__(self):
            return 1

        def __eq__(self, other):
            return isinstance(other, Collide) and self.v == other.v

    f, calls = recorder(max_size=64)
    for round_ in range(3):
        for v in range(40):
            assert f(Collide(v)) == v + 1
    assert len(calls) == 40
    assert f.cache_info().hits == 80


def test_keyword_names_must_be_strings_on_the_tuple_path():
    f, _ = recorder()
    with pytest.raises(TypeError):
        f(**{1: 2})  # type: ignore[misc]
