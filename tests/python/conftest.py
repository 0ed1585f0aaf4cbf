"""Shared fixtures of the Python tests.

Every test runs with ``WARP_CACHE_DIR`` pointing at its own temporary directory, so that the
shared backend (which honours it) never touches a real user's cache and tests can run in
parallel.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

# Before any test module is imported: module-level `@cache(backend="shared")` functions open
# their files at import time, so the whole session gets a private directory too (tests then
# override it per test). A real user's cache (/dev/shm/warp_cache-<uid>) is never touched.
_SESSION_DIR = tempfile.mkdtemp(prefix="warp_cache_session_")
os.environ["WARP_CACHE_DIR"] = _SESSION_DIR
atexit.register(shutil.rmtree, _SESSION_DIR, ignore_errors=True)


@pytest.fixture(autouse=True)
def warp_cache_dir(tmp_path, monkeypatch):
    """A per-test cache directory, exported as WARP_CACHE_DIR."""
    directory = tmp_path / "warp_cache"
    directory.mkdir(mode=0o700)
    monkeypatch.setenv("WARP_CACHE_DIR", str(directory))
    return directory


@pytest.fixture(params=["memory", "shared"])
def backend(request, warp_cache_dir):
    """Runs a test once per backend, as the ``backend=`` value to pass to ``cache``.

    The shared run's files go to this test's own WARP_CACHE_DIR (``warp_cache_dir``): no two
    tests, and no test and a real user, share a cache file."""
    return request.param


def pytest_report_header(config):
    import warp_cache._warp_cache as native

    return (
        f"warp_cache native module: {native.__file__}; vectorcall={native.VECTORCALL}; "
        f"PYTHONMALLOC={os.environ.get('PYTHONMALLOC', '')}"
    )
