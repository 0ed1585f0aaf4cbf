"""Shared backend: what a hit returns (exactly the type and value the miss returned) and how
keys are told apart (fast codec path for exact types only, pickle for the
rest; keys by bytes, never by ``hash()``)."""

from __future__ import annotations

import collections
import enum
import fractions
import math
import multiprocessing

import pytest

from warp_cache import cache


class Color(enum.IntEnum):
    RED = 1
    GREEN = 2


class Shade(enum.Enum):
    DARK = "dark"


class MyStr(str):
    pass


class MyInt(int):
    pass


class MyFloat(float):
    pass


class MyTuple(tuple):
    pass


Pair = collections.namedtuple("Pair", "a b")


class Custom:
    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return type(other) is Custom and other.value == self.value


shared_list = [1, 2]

VALUES = [
    None,
    True,
    False,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**63,
    -(2**63) - 1,
    10**40,
    0.0,
    -0.0,
    1.5,
    float("inf"),
    float("-inf"),
    float("nan"),
    "",
    "hello",
    "ünïcødé ✓ 😀",
    "lone \ud800 surrogate",
    b"",
    b"\x00\xffbytes",
    (),
    (1, "a", None, 2.5, b"x", True),
    ((1, 2), (3,)),
    (1, [2, 3]),
    ([1], "x"),
    [1, 2, 3],
    {"a": 1, "b": [2]},
    {1, 2, 3},
    frozenset({"a", "b"}),
    bytearray(b"mutable"),
    Color.RED,
    Shade.DARK,
    MyStr("sub"),
    MyInt(7),
    MyFloat(2.5),
    MyTuple((1, 2)),
    Pair(1, "b"),
    Custom(3),
    fractions.Fraction(1, 3),
    complex(1, -2),
    [shared_list, shared_list],
]

ROLE = {"value": "writer"}


@cache(backend="shared", max_size=256)
def value_at(index):
    """Returns VALUES[index] in the writer; a marker anywhere else (so a reader that gets the
    real value got it from the cache)."""
    return VALUES[index] if ROLE["value"] == "writer" else ("computed in reader", index)


def same(a, b):
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, float):
        return math.copysign(1.0, a) == math.copysign(1.0, b) and a == b
    if isinstance(a, (tuple, list)) and not isinstance(a, (MyTuple,)) and type(a) in (tuple, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("index", range(len(VALUES)), ids=[repr(v)[:30] for v in VALUES])
def test_a_hit_returns_exactly_what_the_miss_returned(index):
    calls = []
    original = VALUES[index]

    @cache(backend="shared")
    def f(i):
        calls.append(i)
        return VALUES[i]

    missed = f(index)
    hit = f(index)
    assert len(calls) == 1, "the second call was a hit"
    assert missed is original
    assert same(hit, original), (hit, original)


def test_shared_references_inside_a_value_survive():
    @cache(backend="shared")
    def f():
        inner = [1]
        return [inner, inner], (inner, inner)

    f()
    listed, tupled = f()
    assert listed[0] is listed[1] and tupled[0] is tupled[1]


def _read_in_child(queue):
    ROLE["value"] = "reader"
    queue.put([value_at(i) for i in range(len(VALUES))])


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_another_process_gets_the_same_types(method, monkeypatch):
    # A spawned child re-imports this module: it must open value_at in the directory this
    # process opened it in (at import, before the per-test directory was set).
    monkeypatch.setenv("WARP_CACHE_DIR", str(value_at._shared_files()["dir"]))
    ROLE["value"] = "writer"
    value_at.cache_clear()
    for i in range(len(VALUES)):
        value_at(i)
    ctx = multiprocessing.get_context(method)
    queue = ctx.Queue()
    child = ctx.Process(target=_read_in_child, args=(queue,))
    child.start()
    got = queue.get(timeout=60)
    child.join(60)
    assert child.exitcode == 0
    for index, (value, original) in enumerate(zip(got, VALUES)):
        if isinstance(original, Custom):
            # Unpickled in the child, pickled back to us: equal, same class.
            assert value == original
            continue
        assert same(value, original), (index, value, original)


def test_keys_of_different_types_never_share_an_entry():
    """With typed=True (with the default typed=False, True, 1.0, -0.0 and False share the
    equal int's entry: test_typed.py)."""
    calls = []

    @cache(backend="shared", typed=True)
    def f(x):
        calls.append(x)
        return repr(type(x))

    keys = [1, 1.0, True, MyInt(1), Color.RED, "1", b"1", (1,), [1], MyStr("1"), -0.0, 0.0, 0, False]
    results = [f(k) for k in keys]
    assert results == [repr(type(k)) for k in keys]
    assert len(calls) == len(keys)
    assert [f(k) for k in keys] == results
    assert len(calls) == len(keys), "each key hits its own entry"


def test_keys_that_need_pickle_still_hit():
    calls = []

    @cache(backend="shared")
    def f(x):
        calls.append(1)
        return 1

    keys = [
        2**100,
        -(2**70),
        "lone \udcff surrogate",
        ((1, 2), (3, (4,))),
        frozenset({1, 2}),
        Pair(1, 2),
        Color.GREEN,
        float("nan"),
        {"k": [1, 2]},
        {1, 2, 3},
        Custom(1),
        None,
    ]
    for key in keys:
        f(key)
        f(key)
    assert len(calls) == len(keys)


def test_nan_keys_equal_themselves_by_bits():
    calls = []

    @cache(backend="shared")
    def f(x):
        calls.append(x)
        return 0

    f(float("nan"))
    f(float("nan"))
    assert len(calls) == 1


def test_a_value_that_no_longer_unpickles_is_a_miss():
    class Gone:
        """Pickles by reference to a name that later disappears."""

    Gone.__qualname__ = "GoneForNow"
    globals()["GoneForNow"] = Gone
    calls = []

    @cache(backend="shared")
    def f(x):
        calls.append(x)
        return Gone() if len(calls) == 1 else "recomputed"

    assert type(f(1)) is Gone
    del globals()["GoneForNow"]
    assert f(1) == "recomputed", "an unpickling failure is a miss, never an exception"
    assert f(1) == "recomputed"
    assert len(calls) == 2


def test_values_at_exactly_the_size_limit():
    # "x" * n encodes as tag + 4-byte length + n bytes.
    @cache(backend="shared", max_value_size=64)
    def f(n):
        return "x" * n

    for n in (59, 60):
        f(n)
        f(n)
    info = f.cache_info()
    assert (info.hits, info.oversize_skips) == (1, 2)


def test_key_size_is_the_encoded_call():
    # A one-int key: tuple header (5) + int (9) = 14 bytes.
    @cache(backend="shared", max_key_size=14)
    def f(*args):
        return len(args)

    f(1)
    f(1)
    f(1, 2)
    assert f.cache_info().hits == 1 and f.cache_info().oversize_skips == 1
