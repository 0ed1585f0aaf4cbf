"""The decorator's surface: forms, CacheInfo, cache_clear, metadata, pickling, typing files.

Behaviour both backends share is tested over both in test_both_backends.py."""

from __future__ import annotations

import copy
import functools
import os
import pathlib
import pickle
import sys

import pytest

import warp_cache
from warp_cache import Backend, CacheInfo, cache


@cache(max_size=100)
def compute(n):
    """Squares n."""
    return n**2


@cache
def bare(n):
    return n + 1


class Holder:
    @cache(max_size=8)
    def method(self, x):
        return (id(self), x)


def test_public_names():
    assert set(warp_cache.__all__) >= {"cache", "Backend", "CacheInfo"}
    assert Backend.MEMORY == 0 and Backend.SHARED == 1
    assert issubclass(Backend, int)


def test_cache_info_is_a_small_value_type():
    info = CacheInfo(hits=1, misses=2, max_size=3, current_size=4)
    assert tuple(info) == (1, 2, 3, 4)
    hits, misses, max_size, current_size = info
    assert (hits, misses, max_size, current_size) == (1, 2, 3, 4)
    assert len(info) == 4 and info[0] == 1 and info[-1] == 4
    assert info._fields == ("hits", "misses", "max_size", "current_size")
    assert info._asdict() == {"hits": 1, "misses": 2, "max_size": 3, "current_size": 4}
    assert info == CacheInfo(1, 2, 3, 4) and hash(info) == hash(CacheInfo(1, 2, 3, 4))
    assert info != CacheInfo(1, 2, 3, 5)
    assert pickle.loads(pickle.dumps(info)) == info
    with pytest.raises(AttributeError):
        info.hits = 7  # type: ignore[misc]
    shared = CacheInfo(hits=1, misses=2, max_size=3, current_size=4, oversize_skips=5)
    assert repr(shared) == "CacheInfo(hits=1, misses=2, max_size=3, current_size=4, oversize_skips=5)"
    # Like lru_cache's: a tuple of the four counts; the backend's own counters are outside it.
    assert shared == (1, 2, 3, 4) and len(shared) == 4 and shared.oversize_skips == 5
    assert "oversize_skips" not in shared._asdict()
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        again = pickle.loads(pickle.dumps(shared, protocol))
        assert again == shared and again.oversize_skips == 5 and type(again) is CacheInfo
    assert copy.copy(shared).oversize_skips == 5 and copy.deepcopy(shared).oversize_skips == 5
    assert shared._replace(hits=9) == (9, 2, 3, 4) and shared._replace(hits=9).oversize_skips == 5
    assert CacheInfo._make([1, 2, 3, 4]) == info
    with pytest.raises(ValueError):
        shared._replace(nonsense=1)
    with pytest.raises(AttributeError):
        shared.oversize_skips = 7  # type: ignore[misc]


def test_cache_info_is_what_lru_cache_tests_expect(backend):
    # As CPython's own lru_cache tests use it: compared with a plain tuple, unpacked into four.
    @cache(max_size=10, backend=backend)
    def f(x):
        return x

    f(1)
    f(1)
    f(2)
    assert f.cache_info() == (1, 2, 10, 2)
    hits, misses, max_size, current_size = f.cache_info()
    assert (hits, misses, max_size, current_size) == (1, 2, 10, 2)
    assert isinstance(f.cache_info(), tuple) and isinstance(f.cache_info(), CacheInfo)


def test_bare_and_called_forms():
    assert bare(1) == 2 and bare(1) == 2
    assert bare.cache_info().hits == 1
    assert bare.cache_info().max_size == 128, "default max_size"

    @cache()
    def called(x):
        return x * 3

    assert called(2) == 6 and called(2) == 6
    assert called.cache_info().hits == 1


def test_positional_parameters_are_rejected_with_a_hint():
    with pytest.raises(TypeError, match="keywords"):
        cache(256)  # type: ignore[arg-type]


def test_hot_path_is_the_native_object():
    assert type(compute) is warp_cache.CachedFunction
    assert type(compute).__module__ == "warp_cache"
    disabled = os.environ.get("WARP_CACHE_NO_VECTORCALL", "") not in ("", "0")
    assert warp_cache._warp_cache.VECTORCALL is (not disabled), "vectorcall slot installed"


def test_sync_hits_run_no_python_code():
    """A hit is one native call: no Python-level frame (wrapper, key builder) runs."""
    compute(7)
    compute(8)
    events = []

    def profiler(frame, event, arg):
        if event == "call":
            events.append(frame.f_code.co_name)

    sys.setprofile(profiler)
    try:
        assert compute(7) == 49
        assert compute(8) == 64
    finally:
        sys.setprofile(None)
    assert events == []
    compute(9)  # control: a miss runs the wrapped Python function
    sys.setprofile(profiler)
    try:
        compute(10)
    finally:
        sys.setprofile(None)
    assert events == ["compute"]


def test_per_test_cache_directory(warp_cache_dir):
    assert os.environ["WARP_CACHE_DIR"] == str(warp_cache_dir)
    assert warp_cache_dir.is_dir()


def test_function_attributes_are_kept_and_settable():
    def tagged(x):
        return x

    tagged.tag = "kept"  # type: ignore[attr-defined]
    wrapped = cache(tagged)
    assert wrapped.tag == "kept"
    wrapped.other = 1
    assert wrapped.other == 1


def test_methods_bind_like_functions():
    a, b = Holder(), Holder()
    assert a.method(1) == (id(a), 1)
    assert a.method(1) == (id(a), 1)
    assert b.method(1) == (id(b), 1), "self is part of the key"
    assert Holder.method.cache_info().hits == 1
    assert a.method.cache_info() == Holder.method.cache_info()
    assert Holder.method(a, 1) == (id(a), 1), "unbound call through the class hits too"
    assert Holder.method.cache_info().hits == 2
    assert Holder.__dict__["method"].__get__(None, Holder) is Holder.method
    bound = a.method
    assert bound.__self__ is a and bound.__func__ is Holder.method


def test_staticmethod_and_classmethod_composition():
    class C:
        @staticmethod
        @cache(max_size=4)
        def twice(x):
            return 2 * x

        @classmethod
        @cache(max_size=4)
        def named(cls, x):
            return (cls.__name__, x)

    assert C.twice(2) == 4 and C().twice(2) == 4
    assert C.named(1) == ("C", 1) and C.named(1) == ("C", 1)


def test_pickled_function_runs_in_a_worker_process():
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.map(compute, [2, 3]) == [4, 9]


def test_callable_objects_and_partials_can_be_cached():
    class Scale:
        def __init__(self, k):
            self.k = k

        def __call__(self, x):
            return self.k * x

    scaled = cache(Scale(3))
    assert scaled(2) == 6 and scaled(2) == 6
    assert scaled.cache_info().hits == 1
    part = cache(functools.partial(pow, 2))
    assert part(10) == 1024 and part(10) == 1024
    assert part.cache_info().hits == 1


def test_non_callables_are_rejected():
    with pytest.raises(TypeError):
        cache()(42)


def test_typing_files_ship_with_the_package():
    package = pathlib.Path(warp_cache.__file__).parent
    assert (package / "py.typed").exists()
    stub = (package / "__init__.pyi").read_text()
    import ast

    tree = ast.parse(stub)
    names = {
        node.name
        for node in tree.body
        if isinstance(node, (ast.FunctionDef, ast.ClassDef))
    }
    # Re-exported from the typed module that defines it (a stub's `import X as X`).
    names |= {
        alias.asname
        for node in tree.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.asname == alias.name
    }
    assert {"cache", "Backend", "CacheInfo", "CachedFunction"} <= names
    assert "class CacheInfo(" in (package / "_info.py").read_text()
