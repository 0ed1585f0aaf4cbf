"""A running process follows its shared cache files: when they are
replaced (by another warp_cache process), unlinked, or the whole directory is removed, a process
that only gets hits notices within a bound and moves to the files now at the names; this keeps
working after any number of replacements. Temporary files of a process killed while creating
a file, and the files of other code versions of a function that no live process maps, are
removed by later decorations."""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from shared_util import cache_files, child_env, run_python, write_script

# A noticed change must show up within this bound. The store's own bound is the next call
# for files retired by warp_cache and FILE_CHECK_EVERY_NS (100 ms) + 16 calls for files
# removed by someone else (docs/ARCHITECTURE.md); the rest is slack for a loaded machine.
FOLLOW_BOUND_S = 2.0

FOLLOWER = """
import sys, time
from warp_cache import cache

VERSION_FILE = sys.argv[1]
STARTED = time.monotonic()  # once Python and warp_cache are loaded

@cache(backend="shared", max_size=64)
def versioned(x):
    with open(VERSION_FILE) as handle:
        return (x, handle.read())

for x in range(8):
    versioned(x)
print("ready", STARTED, flush=True)
seen = versioned(0)[1]
deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    now = versioned(0)[1]
    if now != seen:
        seen = now
        print("changed", now, time.monotonic(), flush=True)
    if sys.argv[3:] == ["slow"]:
        time.sleep(0.01)
print("done", flush=True)
"""


class Follower:
    """A child process calling ``versioned(0)`` in a loop (hits, unless its cache moved)."""

    def __init__(self, tmp_path: Path, cache_dir: Path, seconds: float, slow: bool = False):
        self.version = tmp_path / "version.txt"
        self.version.write_text("1")
        self.script = write_script(tmp_path / "app", "follower.py", FOLLOWER)
        args = [sys.executable, str(self.script), str(self.version), str(seconds)]
        self.proc = subprocess.Popen(
            args + (["slow"] if slow else []),
            env=child_env(cache_dir),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.fd = self.proc.stdout.fileno()
        self.pending = b""
        assert self.line(60).split()[0] == "ready"

    def line(self, timeout: float) -> str:
        """The follower's next output line. Reads the pipe itself: a select on the pipe
        followed by a buffered readline would wait for output that is already buffered."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.pending:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.fd], [], [], max(0.0, left))
            assert ready, f"no output from the follower within {timeout}s"
            chunk = os.read(self.fd, 4096)
            assert chunk, f"the follower ended without a line (it had {self.pending!r})"
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\n")
        return line.decode().strip()

    def wait_for_version(self, version: str, since: float) -> float:
        """Seconds from ``since`` (CLOCK_MONOTONIC, system-wide) until the follower saw it."""
        while True:
            words = self.line(FOLLOW_BOUND_S + 5).split()
            assert words and words[0] == "changed", f"follower said {words}"
            if words[1] == version:
                return float(words[2]) - since

    def set_version(self, version: str) -> None:
        self.version.write_text(version)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(30)


def _followed_within_bound(follower: Follower, change, versions=("2",)) -> None:
    for version in versions:
        follower.set_version(version)
        start = time.monotonic()
        change()
        waited = follower.wait_for_version(version, start)
        assert waited < FOLLOW_BOUND_S, f"version {version} seen after {waited:.3f}s"


def test_a_hit_only_process_follows_when_the_directory_is_removed(tmp_path, warp_cache_dir):
    follower = Follower(tmp_path, warp_cache_dir, 30)
    try:
        _followed_within_bound(follower, lambda: shutil.rmtree(warp_cache_dir))
    finally:
        follower.stop()


def test_a_slow_caller_follows_within_the_time_bound(tmp_path, warp_cache_dir):
    # 100 calls a second: a bound in calls alone would take far longer than the time bound.
    follower = Follower(tmp_path, warp_cache_dir, 30, slow=True)
    try:
        _followed_within_bound(follower, lambda: shutil.rmtree(warp_cache_dir))
    finally:
        follower.stop()


def test_a_hit_only_process_follows_unlinked_files(tmp_path, warp_cache_dir):
    follower = Follower(tmp_path, warp_cache_dir, 30)

    def unlink_cache_files():
        for name in cache_files(warp_cache_dir):
            os.unlink(warp_cache_dir / name)

    try:
        _followed_within_bound(follower, unlink_cache_files)
    finally:
        follower.stop()


def test_a_process_follows_any_number_of_replacements(tmp_path, warp_cache_dir):
    follower = Follower(tmp_path, warp_cache_dir, 60)
    try:
        versions = [str(v) for v in range(2, 16)]
        _followed_within_bound(follower, lambda: shutil.rmtree(warp_cache_dir), versions)
    finally:
        follower.stop()


def test_files_replaced_by_another_process_are_followed_at_once(tmp_path, warp_cache_dir):
    """Another process finds the lock file damaged and replaces the pair: it marks the old
    files retired, and the follower moves at its next call."""
    follower = Follower(tmp_path, warp_cache_dir, 30)

    def damage_and_reopen():
        lock = [n for n in cache_files(warp_cache_dir) if n.endswith(".lock")]
        assert len(lock) == 1, cache_files(warp_cache_dir)
        with open(warp_cache_dir / lock[0], "r+b") as handle:
            handle.write(b"\xa5" * 8)  # the magic
        # The same script, run as a replacer: it opens (and so replaces) the files, stores.
        # Returns when (CLOCK_MONOTONIC) it started, once Python and warp_cache were loaded.
        replacer = run_python(
            [str(follower.script), str(follower.version), "0"], warp_cache_dir, timeout=60
        )
        ready = replacer.stdout.split()
        assert ready[0] == "ready", replacer.stdout
        return float(ready[1])

    try:
        follower.set_version("2")
        start = time.monotonic()
        replacer_started = damage_and_reopen()
        replaced_at = time.monotonic()
        waited = follower.wait_for_version("2", start)
        # The bound counts from the replacer's first cache operation: its interpreter's own
        # startup (seconds on a loaded machine) is not the follower's delay.
        from_replacer = waited - (replacer_started - start)
        assert from_replacer < FOLLOW_BOUND_S, f"seen {from_replacer:.3f}s after the replacer began"
        # Retired files are followed at the next call, not after a rate limit: the follower
        # calls in a tight loop, so it sees the new files well before 100 ms have passed.
        assert waited - (replaced_at - start) < 0.1 + 0.05, f"{waited:.3f}s"
    finally:
        follower.stop()


CREATOR = """
import sys
from warp_cache import cache

@cache(backend="shared", max_size=int(sys.argv[1]))
def big(x):
    return x

print("created", flush=True)
"""


def _temporary_files(directory: Path):
    return [n for n in os.listdir(directory) if n.startswith(".tmp.")] if directory.exists() else []


@pytest.fixture
def shm_cache_dir(tmp_path):
    """A private cache directory on tmpfs (/dev/shm), where reserving a region takes time."""
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm")
    directory = Path(f"/dev/shm/warp-test-{os.getpid()}-{tmp_path.name}")
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(mode=0o700)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_temporary_files_of_a_killed_creator_are_removed(tmp_path, shm_cache_dir):
    warp_cache_dir = shm_cache_dir
    script = write_script(tmp_path / "app", "creator.py", CREATOR)
    # A table of ~2.4 GB (80 B per entry of max_size, made real at creation): creating it
    # takes long enough to be killed in the middle, leaving its temporary file behind.
    leftovers = []
    for delay in (0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.2):
        proc = subprocess.Popen(
            [sys.executable, str(script), "30000000"],
            env=child_env(warp_cache_dir),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        leftovers = _temporary_files(warp_cache_dir)
        if leftovers:
            break
        for name in cache_files(warp_cache_dir):
            os.unlink(warp_cache_dir / name)
    if not leftovers:
        pytest.skip("could not kill a creator in the middle of creating its file")
    # A later decoration of any function (in a new process) removes them.
    run_python(["-c", "from warp_cache import cache\ncache(backend='shared')(abs)(1)"],
               warp_cache_dir)
    assert _temporary_files(warp_cache_dir) == [], "temporary files of a dead creator remain"


def test_a_failed_creation_leaves_no_temporary_file(warp_cache_dir, monkeypatch):
    from warp_cache import cache

    st = os.statvfs(warp_cache_dir)
    free = st.f_bavail * st.f_frsize
    # A table (80 B per entry, made real at creation) twice the free space.
    too_big = min(2**31, free // 40 + 1)
    with pytest.warns(RuntimeWarning, match="not enough space"):
        cache(backend="shared", max_size=too_big)(abs)
    assert _temporary_files(warp_cache_dir) == []
    monkeypatch.setenv("WARP_CACHE_STRICT", "1")
    with pytest.raises(MemoryError):
        cache(backend="shared", max_size=too_big)(abs)
    assert _temporary_files(warp_cache_dir) == []


VERSIONED_MODULE = """
from warp_cache import cache

@cache(backend="shared")
def price(x):
    return x * {rate}
"""

USE_VERSION = """
import sys, time
sys.path.insert(0, sys.argv[1])
import pricing
print(pricing.price(3), flush=True)
if sys.argv[2:] == ["stay"]:
    sys.stdin.readline()
"""


def test_files_of_old_code_versions_are_removed_when_unused(tmp_path, warp_cache_dir):
    app = tmp_path / "app"
    runner = write_script(tmp_path, "use_version.py", USE_VERSION)

    def deploy(rate):
        write_script(app, "pricing.py", VERSIONED_MODULE.format(rate=rate))
        for cached in (app / "__pycache__").glob("*"):
            cached.unlink()

    def pairs():
        return sorted({n.rsplit(".", 1)[0] for n in cache_files(warp_cache_dir)})

    deploy(2)
    assert run_python([str(runner), str(app)], warp_cache_dir).stdout.split() == ["6"]
    assert len(pairs()) == 1
    # A live process keeps using version 2 while version 3 is deployed: both stay.
    deploy(2)
    stay = subprocess.Popen(
        [sys.executable, str(runner), str(app), "stay"],
        env=child_env(warp_cache_dir),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert stay.stdout.readline().strip() == "6"
        deploy(3)
        assert run_python([str(runner), str(app)], warp_cache_dir).stdout.split() == ["9"]
        assert len(pairs()) == 2, "files still mapped by a live process are kept"
    finally:
        stay.communicate("\n", timeout=30)
    # Nobody maps version 2 any more: the next deploy's decoration removes it (and keeps 3
    # only while it is the version in use).
    deploy(4)
    assert run_python([str(runner), str(app)], warp_cache_dir).stdout.split() == ["12"]
    remaining = pairs()
    assert len(remaining) == 1, remaining
    assert all(name.startswith("pricing.price.") for name in remaining), remaining


def test_unrelated_scripts_are_not_versions_of_each_other(tmp_path, warp_cache_dir):
    script = textwrap.dedent(
        """
        from warp_cache import cache

        @cache(backend="shared")
        def compute(x):
            return x * {factor}

        print(compute(7))
        """
    )
    one = write_script(tmp_path / "one", "job.py", script.format(factor=1))
    two = write_script(tmp_path / "two", "job.py", script.format(factor=2))
    run_python([str(one)], warp_cache_dir)
    run_python([str(two)], warp_cache_dir)
    assert len(cache_files(warp_cache_dir)) == 4, "both scripts keep their caches"
