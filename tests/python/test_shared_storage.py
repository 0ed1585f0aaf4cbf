"""Shared backend storage v2 (issue 11): what a cache costs in /dev/shm, and what happens when
/dev/shm runs out.

Entries have variable sizes and live in a sparse data file that grows with ``fallocate``, so a
cache pays tmpfs pages only for what it stores, never for ``max_size`` times the limits. These
tests measure that on real files (``st_blocks`` of the data and lock files, in a private
directory under /dev/shm, the backend's default filesystem) and with real processes:

* small entries cost at most 256 B each; big values about their encoded size;
* ``max_value_size=16 MiB`` costs nothing until something that big is stored;
* ``max_bytes`` is a budget of the data file's allocated bytes: SIEVE evicts more to stay
  within it, and a value bigger than the whole budget is an oversize skip;
* on a full filesystem (a 64 MiB tmpfs in a private mount namespace) inserts are skipped and
  counted in ``cache_info().space_skips``; every call still returns its own value, nothing
  raises, no SIGBUS, and the entries already stored keep hitting;
* when not even the header and table fit (a 4 MiB tmpfs), decoration falls back to an
  in-process cache with one RuntimeWarning naming the cause;
* a decorated function holds no file descriptor at rest: 5,000 of them work under a limit of
  64 descriptors.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from shared_util import child_env, write_script
from warp_cache import cache

KiB = 1024
MiB = 1024 * KiB

#: Encoded sizes of the codec (docs/spec.md, "Shared backend serialization"): a one-int
#: argument tuple is a 5-byte tuple header plus a 9-byte int; bytes are 5 + their length.
INT_KEY_BYTES = 14
INT_VALUE_BYTES = 9


def bytes_value_len(payload: int) -> int:
    return 5 + payload


def shared(**kwargs):
    return cache(backend="shared", **kwargs)


@pytest.fixture
def shm_dir(warp_cache_dir, monkeypatch):
    """A private cache directory on /dev/shm (tmpfs, where the shared backend lives by
    default), exported as WARP_CACHE_DIR; removed afterwards. The per-test directory of
    conftest.py is on whatever filesystem holds the temporary directory (ext4 here), where
    block accounting is not the one these tests are about."""
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm")
    directory = Path(f"/dev/shm/warp-test-storage-{os.getpid()}-{warp_cache_dir.parent.name}")
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(mode=0o700)
    monkeypatch.setenv("WARP_CACHE_DIR", str(directory))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def files_of(f) -> dict:
    """The data and lock paths of a shared function that really uses its files (no fallback
    to an in-process cache)."""
    info = f.cache_info()
    assert info.fallback is None, f"fell back to an in-process cache: {info.fallback}"
    files = f._shared_files()
    assert {"data", "lock"} <= set(files), files
    for name in ("data", "lock"):
        assert os.path.isfile(files[name]), files
    return files


def allocated(path) -> int:
    """Bytes the filesystem has allocated for a file (its pages on tmpfs)."""
    return os.stat(path).st_blocks * 512


def allocated_pair(f) -> int:
    files = files_of(f)
    return allocated(files["data"]) + allocated(files["lock"])


def describe(f) -> str:
    files = files_of(f)
    data, lock = os.stat(files["data"]), os.stat(files["lock"])
    return (
        f"data file: {data.st_blocks * 512:,} B allocated of {data.st_size:,} B; lock file: "
        f"{lock.st_blocks * 512:,} B allocated; {f.cache_info()!r}; "
        f"max_bytes={f.cache_parameters().get('max_bytes')!r}"
    )


# --------------------------------------------------------------------------- (a) small entries
def test_small_entries_cost_at_most_256_bytes_of_shm_each(shm_dir):
    n = 100_000

    @shared(max_size=n)
    def plus_one(x):
        return x + 1

    for i in range(n):
        assert plus_one(i) == i + 1
    info = plus_one.cache_info()
    assert (info.misses, info.current_size) == (n, n), info
    for i in range(n):
        assert plus_one(i) == i + 1
    assert plus_one.cache_info().hits == n, "every entry is really stored"

    per_entry = allocated_pair(plus_one) / n
    print(f"{per_entry:.1f} B of /dev/shm per int -> int entry; {describe(plus_one)}")
    assert per_entry <= 256, f"{per_entry:.1f} B per entry (limit 256); {describe(plus_one)}"

    # The default budget: about max_size * (key + value limits) * 1.125 plus header and table.
    budget = plus_one.cache_parameters()["max_bytes"]
    limits = n * (512 + 4096)
    assert isinstance(budget, int) and limits <= budget <= limits * 1.25 + 64 * MiB, budget


# --------------------------------------------------------------------------- (b) embeddings
def embedding(text: str) -> list:
    """A deterministic "embedding" of a text: 1,536 floats from a generator seeded by it."""
    rng = random.Random(text)
    return [rng.uniform(-1.0, 1.0) for _ in range(1536)]


def test_embedding_vectors_cost_about_their_size(shm_dir):
    computed = []

    @shared(max_size=10_000, max_value_size=64 * KiB)
    def embed(text):
        computed.append(text)
        return embedding(text)

    texts = [f"passage {i}: the quick brown fox jumps over the lazy dog" for i in range(1000)]
    expected = {text: embedding(text) for text in texts}
    for text in texts:
        assert embed(text) == expected[text]
    for text in texts:
        assert embed(text) == expected[text]
    info = embed.cache_info()
    assert (info.hits, info.misses, info.current_size) == (1000, 1000, 1000), info
    assert len(computed) == 1000
    assert info.oversize_skips == 0, info

    used = allocated_pair(embed)
    print(f"{used / MiB:.2f} MiB for 1,000 embeddings; {describe(embed)}")
    assert used < 20 * MiB, f"{used:,} B allocated (limit 20 MiB); {describe(embed)}"


# --------------------------------------------------------------------------- (c) full tmpfs
def run_in_private_tmpfs(tmp_path: Path, size: str, script: Path, *args: str, strict: bool, timeout: float):
    """Runs ``python script <mountpoint> *args`` in a private mount namespace where a fresh
    tmpfs of ``size`` is mounted on a private directory, which is the child's
    WARP_CACHE_DIR. Skips the test when mount namespaces or the tmpfs mount are not allowed
    here. Returns the CompletedProcess (output as text)."""
    if shutil.which("unshare") is None:
        pytest.skip("needs the unshare program (util-linux) for a private mount namespace")
    mountpoint = tmp_path / "tmpfs"
    mountpoint.mkdir(mode=0o700)
    shell = (
        'mount -t tmpfs -o size="$1",mode=0700 tmpfs "$2" '
        '|| { echo "warp-test: cannot mount a tmpfs" >&2; exit 97; }\n'
        'mp="$2"; shift 2\n'
        'WARP_CACHE_DIR="$mp" exec "$@"\n'
    )
    extra = {"WARP_CACHE_STRICT": "1"} if strict else {}
    command = [
        "unshare", "--mount", "--propagation", "private",
        "sh", "-c", shell, "sh", size, str(mountpoint),
        sys.executable, str(script), str(mountpoint), *args,
    ]  # fmt: skip
    try:
        proc = subprocess.run(
            command,
            env=child_env(mountpoint, **extra),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except OSError as e:
        pytest.skip(f"cannot run unshare: {e}")
    if proc.returncode != 0 and (
        "unshare failed" in proc.stderr or "cannot change root filesystem propagation" in proc.stderr
    ):
        # EPERM without CAP_SYS_ADMIN (not root, or a container that forbids namespaces).
        pytest.skip(f"cannot create a mount namespace here: {proc.stderr.strip()}")
    if proc.returncode == 97 and "warp-test: cannot mount a tmpfs" in proc.stderr:
        pytest.skip(f"cannot mount a tmpfs in a private mount namespace: {proc.stderr.strip()}")
    if proc.returncode != 0:
        how = (
            f"killed by {signal.Signals(-proc.returncode).name}"
            if proc.returncode < 0
            else f"exit {proc.returncode}"
        )
        raise AssertionError(f"child {how}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


FULL_TMPFS = r'''
import json, os, sys

from warp_cache import cache

directory = sys.argv[1]
N = 100_000
VALUE_BYTES = 512 * 1024


def value_of(i):
    return i.to_bytes(8, "little") * (VALUE_BYTES // 8)


@cache(max_size=N, backend="shared")
def small(x):
    return x + 1


def pass_over_small():
    before = small.cache_info().hits
    for x in range(N):
        if small(x) != x + 1:
            raise AssertionError(f"small({x}) returned a wrong value")
    return small.cache_info().hits - before


pass_over_small()
first = small.cache_info()
second_hits = pass_over_small()
small_allocated = sum(os.stat(small._shared_files()[k]).st_blocks * 512 for k in ("data", "lock"))
after_small = os.statvfs(directory)

computed = 0


@cache(max_size=1000, backend="shared", max_value_size=1 << 20)
def big(i):
    global computed
    computed += 1
    return value_of(i)


wrong = []
calls = 0
first_skip_at = None
i = 0
# Until the filesystem is full (the first skip), then 20 more; 1,000 calls are 500 MiB of
# values, far more than the 64 MiB filesystem.
while i < 1000:
    if big(i) != value_of(i):
        wrong.append(i)
    calls += 1
    if first_skip_at is None and big.cache_info().space_skips > 0:
        first_skip_at = i
    if first_skip_at is not None and i >= first_skip_at + 20:
        break
    i += 1
last = i
# Every argument again: the stored ones hit, the others are computed; all must be right.
before = big.cache_info()
for i in range(last + 1):
    if big(i) != value_of(i):
        wrong.append(i)
    calls += 1
big_info = big.cache_info()
full = os.statvfs(directory)
third_hits = pass_over_small()
print(json.dumps({
    "first": list(first), "second_hits": second_hits, "third_hits": third_hits,
    "small_allocated": small_allocated,
    "free_after_small": after_small.f_bavail * after_small.f_frsize,
    "free_at_end": full.f_bavail * full.f_frsize,
    "big": list(big_info), "big_hits_second_pass": big_info.hits - before.hits,
    "big_stored_before_second_pass": before.current_size,
    "space_skips": big_info.space_skips, "oversize_skips": big_info.oversize_skips,
    "first_skip_at": first_skip_at, "last": last, "calls": calls, "computed": computed,
    "wrong": wrong[:20], "fallback": [small.cache_info().fallback, big_info.fallback],
}))
'''


def test_a_full_filesystem_skips_inserts_and_keeps_serving(tmp_path):
    script = write_script(tmp_path / "app", "full_tmpfs.py", FULL_TMPFS)
    proc = run_in_private_tmpfs(tmp_path, "64m", script, strict=True, timeout=120)
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    summary = json.dumps(r)
    print(summary)
    n = 100_000
    # 100,000 int -> int entries fit in a 64 MiB tmpfs (the default budget is far larger than
    # the filesystem: only what is stored is paid).
    assert r["fallback"] == [None, None], summary
    hits, misses, _, current = r["first"]
    assert (hits, misses, current) == (0, n, n), summary
    assert r["second_hits"] == n, summary
    # The big function filled the filesystem: skipped inserts, counted, no wrong value.
    assert r["first_skip_at"] is not None and r["space_skips"] > 0, (
        f"no space skip though {r['calls']} values of 512 KiB were stored on a 64 MiB tmpfs: {summary}"
    )
    assert r["wrong"] == [], summary
    stored = r["big_stored_before_second_pass"]
    assert stored >= 10, f"the tmpfs had room for dozens of 512 KiB values: {summary}"
    assert r["big_hits_second_pass"] == stored, f"every stored value is served: {summary}"
    assert r["oversize_skips"] == 0, summary
    # What was stored before the filesystem filled up is still served.
    assert r["third_hits"] == n, summary


TOO_SMALL = r'''
import json, sys, warnings

from warp_cache import cache

calls = []


def plus_one(x):
    calls.append(x)
    return x + 1


with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    # A table of millions of buckets cannot fit in a 4 MiB filesystem.
    f = cache(max_size=4_000_000, backend="shared")(plus_one)
assert [f(1), f(1), f(2)] == [2, 2, 3]
info = f.cache_info()
print(json.dumps({
    "warnings": [[w.category.__name__, str(w.message)] for w in caught],
    "info": list(info), "fallback": info.fallback, "calls": calls,
    "parameters_fallback": f.cache_parameters()["fallback"],
}))
'''


def test_header_and_table_too_big_for_the_filesystem_fall_back_with_one_warning(tmp_path):
    script = write_script(tmp_path / "app", "too_small.py", TOO_SMALL)
    proc = run_in_private_tmpfs(tmp_path, "4m", script, strict=False, timeout=60)
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    runtime = [message for category, message in r["warnings"] if category == "RuntimeWarning"]
    assert len(runtime) == 1, r
    assert "space" in runtime[0].lower(), runtime[0]
    assert r["fallback"] and r["parameters_fallback"] == r["fallback"], r
    assert r["calls"] == [1, 2] and r["info"][:2] == [1, 2], r


# --------------------------------------------------------------------------- (d) descriptors
MANY_FUNCTIONS = r'''
import json, os, resource, sys

resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

from warp_cache import cache

directory = sys.argv[1]
COUNT = int(sys.argv[2])


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def make(i):
    """A distinct function (its own qualname, so its own cache, not a version of another)."""

    def f(x):
        return 3 * x + i

    f.__name__ = f.__qualname__ = f"fd_probe_{i}"
    return cache(max_size=4, backend="shared")(f)


at_start = open_fds()
functions = []
peak = 0
for i in range(COUNT):
    functions.append(make(i))
    if i % 250 == 0:
        peak = max(peak, open_fds())
after_decorating = open_fds()
wrong = []
for i, f in enumerate(functions):
    if f(7) != 21 + i or f(7) != 21 + i:
        wrong.append(i)
not_hit = [i for i, f in enumerate(functions) if tuple(f.cache_info()) != (1, 1, 4, 1)]
fallbacks = [i for i, f in enumerate(functions) if f.cache_info().fallback is not None]
stems = {f._shared_files()["stem"] for f in functions}
names = [n for n in os.listdir(directory) if n.endswith(".data")]
print(json.dumps({
    "at_start": at_start, "peak": peak, "after_decorating": after_decorating,
    "after_calls": open_fds(), "wrong": wrong[:20], "not_hit": not_hit[:20],
    "fallbacks": fallbacks[:20], "stems": len(stems), "data_files": len(names),
}))
'''


def test_functions_hold_no_file_descriptor_at_rest(tmp_path, shm_dir):
    count = 5000
    script = write_script(tmp_path / "app", "many_functions.py", MANY_FUNCTIONS)
    proc = subprocess.run(
        [sys.executable, str(script), str(shm_dir), str(count)],
        env=child_env(shm_dir, WARP_CACHE_STRICT="1"),  # a fallback is an error, not a warning
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    print(r)
    assert (r["stems"], r["data_files"]) == (count, count), f"{count} distinct caches: {r}"
    assert r["wrong"] == [] and r["fallbacks"] == [], r
    assert r["not_hit"] == [], f"the second call of each must be a hit: {r}"
    assert r["after_decorating"] < 64 and r["peak"] < 64 and r["after_calls"] < 64, r
    # At rest a function holds none: all of them together cost what one process costs.
    assert r["after_calls"] <= r["at_start"] + 2, r


# --------------------------------------------------------------------------- (e) max_bytes
def test_max_bytes_bounds_the_data_file(shm_dir):
    limits = dict(max_size=1000, max_value_size=8 * MiB)

    @shared(**limits)
    def probe(x):
        return x

    # What the header and the table of these parameters cost, before any entry.
    base = allocated(files_of(probe)["data"])
    max_bytes = base + 128 * KiB  # room for about a hundred entries of 1 KiB

    def value_of(i, n=KiB):
        return (i.to_bytes(4, "little", signed=True) * (n // 4 + 1))[:n]

    @shared(max_bytes=max_bytes, **limits)
    def sized(i, n=KiB):
        return value_of(i, n)

    assert sized.cache_parameters()["max_bytes"] == max_bytes
    data = files_of(sized)["data"]
    for i in range(1000):
        assert sized(i) == value_of(i)
    info = sized.cache_info()
    print(f"max_bytes={max_bytes:,} (header and table {base:,}); {describe(sized)}")
    assert info.misses == 1000 and info.oversize_skips == 0, describe(sized)
    assert info.current_size < 250, f"the budget must bind: {describe(sized)}"
    assert info.current_size >= 25, f"the budget has room for ~100 entries: {describe(sized)}"
    assert allocated(data) <= max_bytes, describe(sized)
    assert sized(999) == value_of(999)
    assert sized.cache_info().hits == info.hits + 1, "the last value stored is served"

    # Within max_value_size but bigger than the whole budget: computed, returned, not cached.
    big_len = max_bytes + 4096
    assert bytes_value_len(big_len) <= limits["max_value_size"]
    before = sized.cache_info()
    assert sized(-1, big_len) == value_of(-1, big_len)
    after = sized.cache_info()
    assert after.oversize_skips == before.oversize_skips + 1, after
    assert sized(-1, big_len) == value_of(-1, big_len)
    again = sized.cache_info()
    assert (again.hits, again.oversize_skips) == (after.hits, after.oversize_skips + 1), again
    assert allocated(data) <= max_bytes, describe(sized)


# --------------------------------------------------------------------------- (f) big limits
def test_a_16_mib_value_limit_costs_nothing_until_stored(shm_dir):
    @shared(max_value_size=16 * MiB)
    def blob(n):
        return bytes(range(256)) * (n // 256)

    at_rest = allocated_pair(blob)
    print(f"at decoration: {describe(blob)}")
    assert at_rest < 1 * MiB, f"{at_rest:,} B allocated at decoration; {describe(blob)}"
    assert blob(256) == bytes(range(256))
    assert allocated_pair(blob) < 1 * MiB, describe(blob)

    # A big value costs about its size: at most 1.25x its encoded bytes + 64 B.
    before = allocated_pair(blob)
    n = 8 * MiB
    assert blob(n) == bytes(range(256)) * (n // 256)
    assert blob(n) == bytes(range(256)) * (n // 256)
    info = blob.cache_info()
    assert (info.hits, info.current_size) == (1, 2), info
    grown = allocated_pair(blob) - before
    encoded = INT_KEY_BYTES + bytes_value_len(n)
    print(f"an 8 MiB value: {grown:,} B allocated for {encoded:,} B encoded; {describe(blob)}")
    assert grown <= 1.25 * encoded + 64, f"{grown:,} B for {encoded:,} B; {describe(blob)}"
