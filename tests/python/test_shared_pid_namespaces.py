"""Shared backend across PID namespaces: processes that share a cache directory but not a PID
namespace (containers sharing /dev/shm, started here with ``unshare --pid --fork``) must never
corrupt each other's entries.

Four processes, each the pid 1 of a PID namespace of its own, two with a /proc of their own
(``--mount-proc``, as in a container) and two seeing the host's /proc, run a write-heavy loop
on one ``@cache(backend="shared")`` function for 20 s. Keys come from a set four times
``max_size`` (eviction churn: most calls insert); values are 1-4 KiB of bytes that carry a
digest of their key and of themselves, and every value a process gets back from a hit is
verified. A writer may be slow while it holds the writer lock (descheduled on a loaded
machine); one process makes that certain by sleeping 3 ms inside every 8th write section
(failpoint ``mid_write:sleep=3``, when the extension has failpoints). Nobody is killed or
stopped, so a correct store has no reason to take the lock over from anyone: the test asserts
zero wrong values and zero lock takeovers (``LockFile::takeovers`` of the cache's lock file).

On the core whose owner check is ``kill(pid, 0)`` plus the start time from /proc, both in the
waiter's own namespace, this test FAILS: a live writer of another namespace looks dead (same
pid 1, another start time), its lock is taken over and two writers run at once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import warp_cache._warp_cache as native
from shared_util import child_env, lock_file_takeovers, write_script

#: Length of every process's loop (the requirement: at least 20 s of concurrent writing).
LOOP_S = 20.0
#: Capacity of the cache; keys are drawn from four times as many.
MAX_SIZE = 256

WORKER = r'''
import hashlib, json, os, random, sys, time

import warp_cache._warp_cache as native
from warp_cache import cache

MAX_SIZE, KEYS, SEED, LOOP_S, SLOW = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                                      float(sys.argv[4]), sys.argv[5] == "slow")
computed = 0


def digest(data):
    return hashlib.blake2b(data, digest_size=16).digest()


def make_value(key, rng):
    """16 B digest of the key, 8 B nonce, 4 B payload length, payload, 16 B digest of all."""
    payload = rng.randbytes(rng.randrange(1024 - 44, 4096 - 44))
    body = digest(b"key %d" % key) + rng.randbytes(8) + len(payload).to_bytes(4, "little") + payload
    return body + digest(body)


def check_value(key, value):
    """None if ``value`` is one of ``key``'s values, else what is wrong with it."""
    if type(value) is not bytes or len(value) < 44:
        return f"not a value: {type(value).__name__} of {len(value) if isinstance(value, bytes) else '?'}"
    body, tag = value[:-16], value[-16:]
    if digest(body) != tag:
        return f"digest mismatch (corrupted payload), {len(value)} bytes"
    if body[:16] != digest(b"key %d" % key):
        return "another key's value"
    if int.from_bytes(body[24:28], "little") != len(body) - 28:
        return "length field mismatch"
    return None


rng = random.Random(SEED)


@cache(backend="shared", max_size=MAX_SIZE, max_value_size=4200)
def compute(key):
    global computed
    computed += 1
    return make_value(key, rng)


with open("/proc/self/stat") as stat:
    proc_pid = int(stat.read().split()[0])
print(json.dumps({"ready": True, "pid": os.getpid(), "proc_self": proc_pid,
                  "lock": str(compute._shared_files()["lock"])}), flush=True)
sys.stdin.readline()  # go
keys = random.Random(SEED + 1)
calls = hits = wrong = 0
examples = []
end = time.monotonic() + LOOP_S
while time.monotonic() < end:
    key = keys.randrange(KEYS)
    slow = SLOW and calls % 8 == 0
    if slow:
        native._set_failpoint("mid_write:sleep=3")  # this call's write section takes 3 ms
    before = computed
    value = compute(key)
    if slow:
        native._set_failpoint(None)
    calls += 1
    if computed == before:
        hits += 1
        problem = check_value(key, value)
        if problem is not None:
            wrong += 1
            if len(examples) < 5:
                examples.append(f"key {key}: {problem}")
print(json.dumps({"calls": calls, "hits": hits, "wrong": wrong, "examples": examples,
                  "info": list(compute.cache_info())}), flush=True)
'''


def _unshare_prefix(own_proc: bool) -> list:
    prefix = ["unshare", "--pid", "--fork", "--kill-child"]
    return prefix + ["--mount-proc"] if own_proc else prefix


def _pid_namespaces_or_skip() -> None:
    """Skips unless this process may create PID namespaces (checked by trying)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: unshare --pid creates PID namespaces")
    if shutil.which("unshare") is None:
        pytest.skip("needs the unshare program (util-linux)")
    for own_proc in (True, False):
        try:
            probe = subprocess.run(
                [*_unshare_prefix(own_proc), sys.executable, "-c", "import os; print(os.getpid())"],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            pytest.skip(f"unshare --pid does not work here: {e}")
        if probe.returncode != 0 or probe.stdout.strip() != "1":
            pytest.skip(
                f"unshare --pid{' --mount-proc' if own_proc else ''} does not work here "
                f"(exit {probe.returncode}): {probe.stderr.strip() or probe.stdout.strip()}"
            )


def test_processes_in_different_pid_namespaces_never_corrupt_entries(warp_cache_dir, tmp_path):
    _pid_namespaces_or_skip()
    script = write_script(tmp_path / "ns_worker", "ns_worker.py", WORKER)
    # (own /proc, slow writer)
    layout = [(True, native.FAILPOINTS), (True, False), (False, False), (False, False)]
    procs = []
    try:
        for index, (own_proc, slow) in enumerate(layout):
            procs.append(
                subprocess.Popen(
                    [
                        *_unshare_prefix(own_proc),
                        sys.executable,
                        str(script),
                        str(MAX_SIZE),
                        str(4 * MAX_SIZE),
                        str(index),
                        str(LOOP_S),
                        "slow" if slow else "normal",
                    ],
                    env=child_env(warp_cache_dir),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        ready = []
        for proc in procs:
            line = proc.stdout.readline()
            assert line, f"a worker died at start: {proc.stderr.read()}"
            ready.append(json.loads(line))
        # Each is pid 1 of its own namespace; the --mount-proc ones see their own /proc.
        for (own_proc, _), info in zip(layout, ready):
            assert info["pid"] == 1, info
            assert (info["proc_self"] == 1) == own_proc, info
        assert len({info["lock"] for info in ready}) == 1, "all must share one cache"
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=LOOP_S + 60)
            assert proc.returncode == 0, f"worker exited {proc.returncode}: {err}"
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    lock_files = sorted(Path(warp_cache_dir).glob("*.lock"))
    assert lock_files, f"no lock file in {warp_cache_dir}: {os.listdir(warp_cache_dir)}"
    takeovers = sum(lock_file_takeovers(path) for path in lock_files)
    wrong = sum(r["wrong"] for r in results)
    summary = "; ".join(
        f"{'own' if own else 'host'} /proc{' slow' if slow else ''}: {r['calls']} calls, "
        f"{r['hits']} hits verified, {r['wrong']} wrong {r['examples']}"
        for (own, slow), r in zip(layout, results)
    )
    print(f"takeovers {takeovers}, wrong values {wrong}: {summary}")
    # The loops did what the test is about: many inserts and verified hits in every process.
    for r in results:
        assert r["calls"] >= 2_000 and r["hits"] >= 200, summary
    assert (wrong, takeovers) == (0, 0), (
        f"{wrong} wrong values and {takeovers} writer-lock takeovers, though no process died "
        f"(each takeover took the lock from a live writer in another PID namespace): {summary}"
    )
