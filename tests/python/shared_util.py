"""Helpers of the shared-backend tests: child Python processes that share one cache
directory, and waiting for process states. Not a test module."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pytest

import warp_cache._warp_cache as native

#: A process's presence file in a cache directory (core/src/shm/liveness.rs): one per live
#: process that uses the directory, not a cache file.
PRESENCE_FILE = re.compile(r"^\.live\.[0-9a-f]{8}$")

#: Crash tests drive the extension's failpoints (WARP_CACHE_FAILPOINT); builds without the
#: `failpoints` feature (the other Pythons' builds in scripts/test-all.sh) cannot run them.
needs_failpoints = pytest.mark.skipif(
    not native.FAILPOINTS,
    reason="extension built without failpoints: build it with "
    "`maturin develop --release --features failpoints` to run the crash tests",
)


def cache_files(directory: Path) -> List[str]:
    """The names in a cache directory other than presence files, sorted."""
    return sorted(name for name in os.listdir(directory) if not PRESENCE_FILE.match(name))


def child_env(cache_dir: Path, **extra: str) -> Dict[str, str]:
    """The environment of a child process: this interpreter's, the test's cache directory."""
    env = dict(os.environ)
    env["WARP_CACHE_DIR"] = str(cache_dir)
    env.pop("WARP_CACHE_FAILPOINT", None)
    env.update(extra)
    return env


def write_script(directory: Path, name: str, source: str) -> Path:
    """Writes a Python file (dedented) and returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(source))
    return path


def run_python(
    args: Sequence[str],
    cache_dir: Path,
    *,
    cwd: Optional[Path] = None,
    timeout: float = 60.0,
    check: bool = True,
    **env: str,
) -> subprocess.CompletedProcess:
    """Runs ``python <args>`` to completion; output as text. Fails the test on a non-zero exit
    (showing stderr) when ``check``."""
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=child_env(cache_dir, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"child {args!r} exited with {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def run_code(code: str, cache_dir: Path, **kwargs) -> subprocess.CompletedProcess:
    """Runs a snippet (dedented) with ``python -c``."""
    return run_python(["-c", textwrap.dedent(code)], cache_dir, **kwargs)


def process_state(pid: int) -> str:
    """The one-letter state of a process from /proc ('' if gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def wait_for_state(pid: int, states: str, timeout: float = 20.0) -> None:
    """Waits until the process is in one of ``states`` (e.g. 'T' for stopped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = process_state(pid)
        if state and state in states:
            return
        time.sleep(0.005)
    raise AssertionError(f"process {pid} never reached state {states!r} (now {process_state(pid)!r})")


def wait_for_file(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.005)


def lock_file_word_offset(field: str) -> int:
    """Byte offset of ``field`` in a shared cache's lock file.

    The lock file is ``struct LockFile`` of ``core/src/shm/layout.rs`` (``repr(C)``, made only
    of ``AtomicU64`` words and ``[AtomicU64; N]`` pads). The offset is computed from that
    struct's definition in this checkout, not hard-coded, so a change of the layout cannot
    make a test read the wrong word: the test fails here instead if the field is gone.
    (The takeover counter is ``LockFile::takeovers``; no public API reports it.)
    """
    import re

    layout = Path(__file__).resolve().parents[2] / "core" / "src" / "shm" / "layout.rs"
    source = layout.read_text()
    body = re.search(r"pub struct LockFile \{(.*?)\n\}", source, re.S)
    if body is None:
        raise AssertionError(f"no `pub struct LockFile` in {layout}")
    words = 0
    for line in body.group(1).splitlines():
        line = line.split("//", 1)[0].strip()
        if not line or line.startswith("#["):
            continue
        m = re.fullmatch(r"pub (\w+): (?:AtomicU64|\[AtomicU64; (\d+)\]),", line)
        if m is None:
            raise AssertionError(f"LockFile field not made of AtomicU64 words: {line!r} ({layout})")
        if m.group(1) == field:
            return words * 8
        words += int(m.group(2) or 1)
    raise AssertionError(f"LockFile has no field {field!r} ({layout})")


def lock_file_takeovers(lock_path: Path) -> int:
    """``LockFile::takeovers`` of a cache's lock file: how often a waiter took the writer lock
    over from an owner it judged dead."""
    offset = lock_file_word_offset("takeovers")
    data = lock_path.read_bytes()
    if len(data) < offset + 8:
        raise AssertionError(f"{lock_path} is {len(data)} bytes, too short for LockFile")
    return int.from_bytes(data[offset : offset + 8], sys.byteorder)
