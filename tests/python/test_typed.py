"""``typed``: with ``typed=True`` the types of the arguments are part of the key on both
backends, as ``functools.lru_cache(typed=True)``; with ``typed=False`` (the default) the memory
backend keys exactly as ``lru_cache(typed=False)`` (by ``==``, with its one-``int``/``str``
shortcut), and the shared backend keys ``True``/``False`` and integral floats as the int they
equal."""

from __future__ import annotations

import functools
import subprocess
import sys
from decimal import Decimal

import pytest

from warp_cache import cache

CALLS = [
    ((1,), {}),
    ((1.0,), {}),
    ((True,), {}),
    ((), {"x": 2}),
    ((), {"x": 2.0}),
    ((), {"x": False}),
    ((3, 4), {}),
    ((3.0, 4), {}),
    ((3, 4.0), {}),
    ((0,), {}),
    ((-0.0,), {}),
    (("s",), {}),
]


def replay(f):
    """The results of CALLS through ``f`` (which returns the type name of its first argument)."""
    return [f(*args, **kwargs) for args, kwargs in CALLS]


def type_of_first(x=None, *rest, **kwargs):
    first = x if x is not None else next(iter(kwargs.values()))
    return (type(first).__name__, first)


@pytest.mark.parametrize("typed", [False, True])
def test_memory_keys_exactly_as_lru_cache(typed):
    ours = cache(max_size=64, typed=typed)(type_of_first)
    theirs = functools.lru_cache(maxsize=64, typed=typed)(type_of_first)
    assert replay(ours) == replay(theirs)
    assert ours.cache_info() == tuple(theirs.cache_info())
    if typed:
        assert ours.cache_info().hits == 0, "every call has a different key or type"


def test_typed_keeps_every_type_apart_on_both_backends(backend):
    calls = []

    @cache(max_size=64, backend=backend, typed=True)
    def f(x=None, *rest, **kwargs):
        calls.append(1)
        return type_of_first(x, *rest, **kwargs)

    assert replay(f) == [type_of_first(*a, **k) for a, k in CALLS]
    assert replay(f) == [type_of_first(*a, **k) for a, k in CALLS], "second round: all hits"
    assert f.cache_info() == (len(CALLS), len(CALLS), 64, len(CALLS))
    assert len(calls) == len(CALLS)
    assert f.cache_parameters()["typed"] is True


def test_untyped_shared_keys_bools_and_integral_floats_as_the_int():
    calls = []

    @cache(max_size=64, backend="shared")
    def f(x):
        calls.append(x)
        return type(x).__name__

    assert f(1) == "int"
    assert f(1.0) == "int" and f(True) == "int", "the entry of f(1)"
    assert f(0) == "int" and f(-0.0) == "int" and f(False) == "int"
    assert f(1.5) == "float" and f(float("nan")) == "float"
    # Other types that compare equal across types are kept apart (keys are bytes, not ==).
    assert f(Decimal(1)) == "Decimal"
    assert calls == [1, 0, 1.5, calls[3], Decimal(1)]
    assert f.cache_info() == (4, 5, 64, 5)
    assert f.cache_parameters()["typed"] is False


def test_per_key_methods_use_the_typed_key(backend):
    @cache(max_size=8, backend=backend, typed=True)
    def f(x):
        return repr(x)

    assert f(1) == "1"
    with pytest.raises(KeyError):
        f.cache_peek(1.0)
    assert f.cache_set("float", 1.0)
    assert f.cache_peek(1.0) == "float" and f.cache_peek(1) == "1"
    assert f.cache_invalidate(True) is False
    assert f.cache_invalidate(1) is True
    assert f(1.0) == "float"


def test_typed_hashes_each_argument_once(backend):
    """As CPython's test_lru_hash_only_once: the types add no ``__hash__`` call."""
    hashes = []

    class Key(int):
        def __hash__(self):
            hashes.append(int(self))
            return int.__hash__(self)

        def __reduce__(self):
            return (int, (int(self),))

    @cache(max_size=8, typed=True)
    def f(x, y):
        return x + y

    assert f(Key(1), Key(2)) == 3
    assert f(Key(1), Key(2)) == 3
    assert hashes == [1, 2, 1, 2]
    assert f.cache_info().hits == 1


def test_typed_must_be_a_bool():
    for bad in (1, "yes", None):
        with pytest.raises(TypeError, match="typed must be True or False"):
            cache(typed=bad)


def test_typed_and_untyped_functions_do_not_share_files(tmp_path):
    """The same function decorated with typed=False, then typed=True, in separate processes:
    the typed one does not see the untyped one's entry (their keys mean different things).
    Like an edit of the function, the switch gives a new cache name, and the other one's files
    are removed as an old version once no process maps them."""
    script = tmp_path / "typed_mod.py"
    script.write_text(
        "import sys\n"
        "from warp_cache import cache\n"
        "def f(x):\n"
        "    return type(x).__name__\n"
        "typed = sys.argv[1] == '1'\n"
        "g = cache(max_size=8, backend='shared', typed=typed)(f)\n"
        "print(g(True), g.cache_info().hits)\n"
    )
    runs = [
        subprocess.run(
            [sys.executable, str(script), flag],
            capture_output=True,
            text=True,
            check=True,
            cwd=tmp_path,
        ).stdout.split()
        for flag in ("0", "0", "1")
    ]
    # The second untyped run hits the first one's entry; the typed run computes its own.
    assert runs == [["bool", "0"], ["bool", "1"], ["bool", "0"]]
