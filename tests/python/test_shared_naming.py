"""Shared backend: which functions share a cache (the cache name is derived
from __module__, __qualname__ and a fingerprint; see warp_cache/_shared.py for the rules)."""

from __future__ import annotations

import functools
import os
import sys
import threading

import pytest

from shared_util import cache_files, run_code, run_python, write_script
from warp_cache import cache
from warp_cache._shared import cache_name


def shared(**kwargs):
    return cache(backend="shared", **kwargs)


def base(x):
    return x


def helper(a, b):
    return (a, b)


class Scorer:
    def __init__(self, weight):
        self.weight = weight

    def __call__(self, x):
        return x * self.weight


def make_adder(n):
    def add(x):
        return x + n

    return add


def test_lambdas_with_one_qualname_but_different_code_do_not_share():
    double = shared()(lambda x: x * 2)
    triple = shared()(lambda x: x * 3)
    assert double.__qualname__ == triple.__qualname__
    assert double._shared_name != triple._shared_name
    assert double(5) == 10 and triple(5) == 15 and double(5) == 10


def test_closures_of_one_def_with_different_values_do_not_share():
    plus_one = shared()(make_adder(1))
    plus_two = shared()(make_adder(2))
    again_one = shared()(make_adder(1))
    assert plus_one._shared_name != plus_two._shared_name
    assert plus_one._shared_name == again_one._shared_name, "same code and values: same function"
    assert plus_one(10) == 11 and plus_two(10) == 12 and again_one(10) == 11
    assert again_one.cache_info().hits == 1


def test_defaults_are_part_of_the_identity():
    fs = [shared()(eval("lambda x, n=%d: x + n" % n)) for n in (1, 2)]
    assert fs[0]._shared_name != fs[1]._shared_name
    assert fs[0](1) == 2 and fs[1](1) == 3


def test_unpicklable_captured_values_are_refused_at_decoration():
    lock = threading.Lock()

    def uses_lock(x):
        with lock:
            return x

    with pytest.raises(TypeError, match="closure variable 'lock'.*cannot be pickled"):
        shared()(uses_lock)


def test_recursive_closures_can_be_fingerprinted():
    def outer():
        def fact(n):
            return 1 if n <= 1 else n * fact(n - 1)

        return fact

    f = shared()(outer())
    assert f(5) == 120


def test_partials_with_different_arguments_do_not_share():
    p1 = shared()(functools.partial(helper, 1))
    p2 = shared()(functools.partial(helper, 2))
    p1_again = shared()(functools.partial(helper, 1))
    pk = shared()(functools.partial(helper, b=1))
    names = {p1._shared_name, p2._shared_name, pk._shared_name}
    assert len(names) == 3
    assert p1._shared_name == p1_again._shared_name
    assert p1(9) == (1, 9) and p2(9) == (2, 9) and pk(9) == (9, 1)
    assert p1_again(9) == (1, 9) and p1_again.cache_info().hits == 1


def test_callable_instances_with_different_state_do_not_share():
    by_two = shared()(Scorer(2))
    by_three = shared()(Scorer(3))
    by_two_again = shared()(Scorer(2))
    assert by_two._shared_name != by_three._shared_name
    assert by_two._shared_name == by_two_again._shared_name
    assert by_two(5) == 10 and by_three(5) == 15


def test_bound_methods_include_their_instance():
    a = shared()(Scorer(2).__call__)
    b = shared()(Scorer(5).__call__)
    assert a._shared_name != b._shared_name
    assert a(1) == 2 and b(1) == 5


def test_names_are_deterministic_for_one_function():
    assert cache_name(base) == cache_name(base)
    assert cache_name(base).startswith(f"{__name__}.base.")


def test_long_and_hostile_qualnames_stay_inside_the_directory(warp_cache_dir):
    for qualname in ["q" * 600, "../../../../etc/passwd", "a/b\\c\x00d", ".hidden", "<locals>.x" * 40]:

        def f(x):
            return x

        f.__qualname__ = qualname
        f.__module__ = "../evil/module"
        g = shared()(f)
        assert g(3) == 3 and g(3) == 3
        files = g._shared_files()
        for path in (files["data"], files["lock"]):
            assert os.path.dirname(path) == str(warp_cache_dir), path
            assert len(os.path.basename(path)) <= 100
    assert all(not name.startswith(".") for name in cache_files(warp_cache_dir))


def test_a_changed_body_after_a_deploy_gets_a_new_cache(tmp_path, warp_cache_dir):
    app = tmp_path / "app"
    source = """
        import sys
        from warp_cache import cache

        RATE = {rate}

        @cache(backend="shared")
        def price(x):
            return {body}

        print(price(10), price.cache_info().hits)
    """
    write_script(app, "pricing.py", source.format(rate=2, body="x * RATE"))
    run = lambda: run_python(["-c", "import pricing"], warp_cache_dir, cwd=app).stdout.split()
    assert run() == ["20", "0"]
    assert run() == ["20", "1"], "the same code in a new process: a hit"
    # The body changes (a deploy): never the old result.
    write_script(app, "pricing.py", source.format(rate=2, body="x * RATE + 1"))
    assert run() == ["21", "0"]
    # A constant the function reads changes: the module's contents are part of the identity.
    write_script(app, "pricing.py", source.format(rate=3, body="x * RATE + 1"))
    assert run() == ["31", "0"]


def test_two_unrelated_main_scripts_never_share(tmp_path, warp_cache_dir):
    script = """
        from warp_cache import cache

        FACTOR = {factor}

        @cache(backend="shared")
        def compute(x):
            return x * FACTOR

        print(compute(7), compute.cache_info().hits)
    """
    one = write_script(tmp_path / "one", "job.py", script.format(factor=1))
    two = write_script(tmp_path / "two", "job.py", script.format(factor=2))
    # Identical text in another directory (it may import different siblings): not shared.
    three = write_script(tmp_path / "three", "job.py", script.format(factor=1))
    assert run_python([str(one)], warp_cache_dir).stdout.split() == ["7", "0"]
    assert run_python([str(two)], warp_cache_dir).stdout.split() == ["14", "0"]
    assert run_python([str(three)], warp_cache_dir).stdout.split() == ["7", "0"]
    # The same script again: shared with its previous run.
    assert run_python([str(one)], warp_cache_dir).stdout.split() == ["7", "1"]
    # A relative path to the same script names the same cache (hits are counted across runs).
    assert run_python(["job.py"], warp_cache_dir, cwd=tmp_path / "one").stdout.split() == ["7", "2"]


def test_code_without_a_file_never_shares_between_sessions(warp_cache_dir):
    code = """
        from warp_cache import cache

        @cache(backend="shared")
        def compute(x):
            return x + 1

        print(compute(1), compute.cache_info().hits)
    """
    assert run_code(code, warp_cache_dir).stdout.split() == ["2", "0"]
    assert run_code(code, warp_cache_dir).stdout.split() == ["2", "0"]


def test_names_do_not_depend_on_the_hash_seed(tmp_path, warp_cache_dir):
    module = write_script(
        tmp_path / "mods",
        "seeded.py",
        """
        import functools
        from warp_cache._shared import cache_name

        WORDS = {"alpha", "beta", "gamma", "delta"}

        def make(words):
            def f(x):
                return x in {"one", "two", "three", "four"} and x in words

            return f

        f = make(frozenset(WORDS))
        g = functools.partial(make, {"k": {"x", "y", "z"}})
        print(cache_name(f), cache_name(g))
        """,
    )
    outputs = {
        run_python(["-c", "import seeded"], warp_cache_dir, cwd=module.parent, PYTHONHASHSEED=str(seed)).stdout
        for seed in (0, 1, 2, 12345)
    }
    assert len(outputs) == 1, outputs


def test_spawned_children_of_a_script_share_with_it(tmp_path, warp_cache_dir):
    # Under spawn the child runs the script as __mp_main__: same cache as __main__.
    script = write_script(
        tmp_path / "spawner",
        "main_job.py",
        """
        import multiprocessing
        from warp_cache import cache

        @cache(backend="shared")
        def square(x):
            return x * x

        def child(queue):
            square(3)
            queue.put(square.cache_info().hits)

        if __name__ == "__main__":
            square(3)
            ctx = multiprocessing.get_context("spawn")
            queue = ctx.Queue()
            p = ctx.Process(target=child, args=(queue,))
            p.start()
            print(queue.get(timeout=60))
            p.join()
        """,
    )
    assert run_python([str(script)], warp_cache_dir).stdout.split() == ["1"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX")
def test_name_shape():
    name = cache_name(base)
    module, qualname, digest = name.rsplit(".", 2)
    assert (module, qualname) == (__name__, "base")
    assert len(digest) == 16 and int(digest, 16) >= 0
