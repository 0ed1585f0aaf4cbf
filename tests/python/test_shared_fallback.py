"""When the shared cache's files cannot be used, the decorated function keeps working:
it is cached in this process only, with one RuntimeWarning that
says what is wrong and how to fix it, and cache_info()/cache_parameters() show the fallback.
WARP_CACHE_STRICT=1 turns every such fallback into the error it replaces."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import warnings

import pytest

from warp_cache import cache


def _decorate_with_one_warning(func, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wrapper = cache(backend="shared", **kwargs)(func)
    runtime = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(runtime) == 1, [str(w.message) for w in caught]
    return wrapper, str(runtime[0].message)


def _assert_works_in_process(wrapper, calls):
    assert [wrapper(x) for x in range(5)] == [x + 1 for x in range(5)]
    assert [wrapper(x) for x in range(5)] == [x + 1 for x in range(5)]
    assert calls == list(range(5)), "computed once each: cached in this process"
    info = wrapper.cache_info()
    assert (info.hits, info.misses, info.current_size) == (5, 5, 5)
    assert info.fallback, info
    assert "fallback=" in repr(info)
    assert wrapper.cache_parameters()["fallback"] == info.fallback
    assert wrapper.cache_parameters()["backend"] == "shared"


def _make_function():
    calls = []

    def plus_one(x):
        calls.append(x)
        return x + 1

    return plus_one, calls


def _data_path(func, directory):
    """Where ``func``'s data file lives: learnt from a first decoration, whose files are then
    removed (the names depend only on the function's identity)."""
    probe = cache(backend="shared")(func)
    path = probe._shared_files()["data"]
    for name in ("data", "lock"):
        os.unlink(probe._shared_files()[name])
    assert os.path.dirname(path) == str(directory)
    return directory / os.path.basename(path)


@pytest.mark.parametrize("kind", ["fifo", "directory", "socket"])
def test_something_else_at_a_cache_file_path(kind, warp_cache_dir):
    func, calls = _make_function()
    path = _data_path(func, warp_cache_dir)
    assert len(path.name) <= 100
    if kind == "fifo":
        os.mkfifo(path, 0o600)
    elif kind == "directory":
        path.mkdir(mode=0o700)
    else:
        sock = socket.socket(socket.AF_UNIX)
        here = os.getcwd()
        os.chdir(path.parent)  # a relative name: the absolute path is too long for AF_UNIX
        try:
            sock.bind(path.name)
        finally:
            os.chdir(here)
    wrapper, message = _decorate_with_one_warning(func)
    assert "not a regular file" in message, message
    assert "not enough space" not in message
    assert "WARP_CACHE_STRICT" in message
    _assert_works_in_process(wrapper, calls)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the directory away")
def test_a_cache_directory_owned_by_another_user(warp_cache_dir):
    os.chown(warp_cache_dir, 4242, 4242)
    func, calls = _make_function()
    wrapper, message = _decorate_with_one_warning(func)
    assert "owned by uid 4242" in message, message
    assert "not enough space" not in message
    _assert_works_in_process(wrapper, calls)


def test_a_cache_directory_that_cannot_hold_files(monkeypatch):
    # /proc: exists, owned by root, not writable; its statvfs reports no space at all.
    monkeypatch.setenv("WARP_CACHE_DIR", "/proc")
    func, calls = _make_function()
    wrapper, message = _decorate_with_one_warning(func)
    assert "not enough space" not in message, message
    assert "/proc" in message
    _assert_works_in_process(wrapper, calls)


def test_a_cache_directory_that_cannot_be_created(monkeypatch):
    monkeypatch.setenv("WARP_CACHE_DIR", "/proc/warp_cache_test/cache")
    func, calls = _make_function()
    wrapper, message = _decorate_with_one_warning(func)
    assert "cannot create the shared cache directory" in message, message
    _assert_works_in_process(wrapper, calls)


def test_a_read_only_cache_directory(tmp_path):
    """A read-only filesystem (as a container may mount one), in a private mount namespace."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a private mount namespace")
    mountpoint = tmp_path / "ro"
    mountpoint.mkdir(mode=0o700)
    code = (
        "import warnings\n"
        "warnings.simplefilter('always')\n"
        "from warp_cache import cache\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    f = cache(backend='shared')(lambda x: x + 1)\n"
        "assert [f(1), f(1)] == [2, 2]\n"
        "assert f.cache_info().hits == 1, f.cache_info()\n"
        "print(len(caught), caught[0].category.__name__, str(caught[0].message))\n"
    )
    script = (
        f"mount -t tmpfs -o ro,mode=0700 tmpfs {mountpoint} && "
        f"WARP_CACHE_DIR={mountpoint} exec {sys.executable} -c \"$0\""
    )
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, code],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0 and "mount" in proc.stderr and "warp_cache" not in proc.stderr:
        pytest.skip(f"cannot mount a read-only tmpfs here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    count, category, message = proc.stdout.split(" ", 2)
    assert (count, category) == ("1", "RuntimeWarning"), proc.stdout
    assert "not enough space" not in message, message
    assert "read-only" in message, message


def test_strict_mode_raises_instead(monkeypatch, warp_cache_dir):
    func, _ = _make_function()
    os.mkfifo(_data_path(func, warp_cache_dir), 0o600)
    monkeypatch.setenv("WARP_CACHE_STRICT", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(OSError, match="not a regular file"):
            cache(backend="shared")(func)
    monkeypatch.setenv("WARP_CACHE_STRICT", "0")  # "0" means off
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert cache(backend="shared")(func)(1) == 2


def test_bad_parameters_are_still_errors(monkeypatch):
    monkeypatch.setenv("WARP_CACHE_DIR", "/proc")
    with pytest.raises(ValueError):
        cache(backend="shared", max_size=0)(abs)
    with pytest.raises(TypeError):
        cache(backend="shared", max_key_size="big")(abs)


def test_a_working_shared_cache_reports_no_fallback():
    wrapper = cache(backend="shared")(abs)
    assert wrapper(-1) == 1
    assert wrapper.cache_info().fallback is None
    assert "fallback" not in repr(wrapper.cache_info())
    assert wrapper.cache_parameters() == {
        "max_size": 128,
        "ttl": None,
        "typed": False,
        "single_flight": 5.0,
        "backend": "shared",
        "max_key_size": 512,
        "max_value_size": 4096,
        # The default budget: the fixed part (16,896 B for 128 entries) plus 128 entries at
        # both limits (4,608 B, its size class) and 1/8.
        "max_bytes": 16_896 + 128 * 4608 * 9 // 8,
        "fallback": None,
    }
