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

#: A process's presence file in a cache directory (core/src/shm/liveness.rs): one per live
#: process that uses the directory, not a cache file.
PRESENCE_FILE = re.compile(r"^\.live\.[0-9a-f]{8}$")


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
