"""``python -m warp_cache``: list / stats / clear / remove --stale over real shared caches made
by child processes in the test's WARP_CACHE_DIR."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from shared_util import (
    child_env,
    lock_file_word_offset,
    needs_failpoints,
    run_code,
    wait_for_state,
    write_script,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="no shared backend")

MODULE = """
import warp_cache

@warp_cache.cache(backend="shared", max_size=7)
def square(x):
    return x * x

@warp_cache.cache(backend="shared", max_size=5)
def cube(x):
    return x * x * x
"""


def cli(cache_dir: Path, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "warp_cache", *args],
        env=child_env(cache_dir),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


LIVE_MODULE = """
import warp_cache

@warp_cache.cache(backend="shared", max_size=3)
def triple(x):
    return 3 * x
"""


@pytest.fixture
def scripts(tmp_path):
    directory = tmp_path / "scripts"
    write_script(directory, "cli_mod.py", MODULE)
    write_script(directory, "cli_live.py", LIVE_MODULE)
    return directory


def make_square(cache_dir: Path, scripts: Path, **env: str) -> None:
    """square(1), square(2), square(1): 2 entries, 1 hit, 2 misses."""
    run_code(
        "import cli_mod\nfor x in (1, 2, 1): cli_mod.square(x)\n",
        cache_dir,
        cwd=scripts,
        **env,
    )


def stem_of(cache_dir: Path, function: str, module: str = "cli_mod") -> str:
    prefix = f"{module}.{function}."
    stems = {n.rsplit(".", 1)[0] for n in os.listdir(cache_dir) if n.startswith(prefix)}
    assert len(stems) == 1, stems
    return stems.pop()


def stats(cache_dir: Path, name: str) -> dict:
    proc = cli(cache_dir, "stats", name)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_list_shows_each_cache_as_a_table_and_as_json(warp_cache_dir, scripts):
    make_square(warp_cache_dir, scripts)
    run_code("import cli_mod\ncli_mod.cube(3)\n", warp_cache_dir, cwd=scripts)
    proc = cli(warp_cache_dir, "list")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"shared caches in {warp_cache_dir}:"
    assert lines[1].split()[:5] == ["FUNCTION", "MODULE", "ENTRIES", "MAX", "BYTES"]
    square_row = next(line for line in lines if line.startswith("square "))
    cells = square_row.split()
    assert cells[:4] == ["square", "cli_mod", "2", "7"]
    assert "33.3%" in cells and "free" in cells and cells[-1] == "ok"
    cube_row = next(line for line in lines if line.startswith("cube "))
    assert cube_row.split()[:4] == ["cube", "cli_mod", "1", "5"]
    assert "liveness ids" in proc.stdout

    proc = cli(warp_cache_dir, "list", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["exists"] is True and report["dir"] == str(warp_cache_dir)
    by_function = {c["function"]: c for c in report["caches"]}
    assert set(by_function) == {"square", "cube"}
    square = by_function["square"]
    assert (square["entries"], square["hits"], square["misses"]) == (2, 1, 2)
    assert square["max_size"] == 7 and square["module"] == "cli_mod"
    assert square["hit_ratio"] == pytest.approx(1 / 3)
    assert square["condition"] == "ok" and square["validated"] is True
    data = warp_cache_dir / f"{square['name']}.data"
    lock = warp_cache_dir / f"{square['name']}.lock"
    assert square["bytes"] == data.stat().st_size + lock.stat().st_size
    assert square["lock_owner"] is None and square["lock_held_by_dead"] is False
    assert square["mappers"] == []  # the child exited


def test_stats_by_stem_or_module_qualname_and_unknown_names(warp_cache_dir, scripts):
    make_square(warp_cache_dir, scripts)
    stem = stem_of(warp_cache_dir, "square")
    by_stem = stats(warp_cache_dir, stem)
    by_family = stats(warp_cache_dir, "cli_mod.square")
    for figures in (by_stem, by_family):
        assert figures["name"] == stem
        assert (figures["entries"], figures["hits"], figures["misses"]) == (2, 1, 2)
        assert figures["max_size"] == 7 and figures["format_version"] >= 1
    proc = cli(warp_cache_dir, "stats", "cli_mod.nothing")
    assert proc.returncode == 2
    assert "no shared cache named 'cli_mod.nothing'" in proc.stderr
    assert proc.stdout == ""


def test_a_missing_directory_is_an_empty_list(tmp_path):
    missing = tmp_path / "never_made"
    proc = cli(tmp_path, "--dir", str(missing), "list")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"no cache directory {missing}: no shared caches"
    proc = cli(tmp_path, "--dir", str(missing), "list", "--json")
    assert json.loads(proc.stdout)["caches"] == []
    proc = cli(tmp_path, "--dir", str(missing), "stats", "x")
    assert proc.returncode == 2
    assert not missing.exists()


def test_dir_option_overrides_the_environment(warp_cache_dir, scripts, tmp_path):
    make_square(warp_cache_dir, scripts)
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o700)
    assert cli(empty, "list").stdout.strip() == f"no shared caches in {empty}"
    proc = cli(empty, "--dir", str(warp_cache_dir), "list", "--json")
    assert [c["function"] for c in json.loads(proc.stdout)["caches"]] == ["cube", "square"]


@pytest.mark.parametrize(
    "damage, message",
    [
        ("slots", "fails its check"),
        ("truncate", "is truncated"),
        ("magic", "is not a warp_cache data file"),
    ],
)
def test_a_corrupt_file_is_named_and_exits_1(warp_cache_dir, scripts, damage, message):
    make_square(warp_cache_dir, scripts)
    stem = stem_of(warp_cache_dir, "square")
    data = warp_cache_dir / f"{stem}.data"
    before = data.read_bytes()
    with open(data, "r+b") as out:
        if damage == "slots":
            # Past the 512-byte header and the 32 counter stripes of 128 bytes
            # (docs/ARCHITECTURE.md): the table buckets and every slot.
            out.seek(512 + 32 * 128)
            out.write(b"\xa5" * (len(before) - out.tell()))
        elif damage == "truncate":
            out.truncate(1000)
        else:
            out.write(b"garbage!")
    damaged = data.read_bytes()
    assert damaged != before
    for args in (["list"], ["list", "--json"], ["stats", "cli_mod.square"]):
        proc = cli(warp_cache_dir, *args)
        assert proc.returncode == 1, (args, proc.stdout, proc.stderr)
        assert f"corrupt cache file {data}: " in proc.stderr, proc.stderr
        assert message in proc.stderr, proc.stderr
    table = cli(warp_cache_dir, "list").stdout
    assert "CORRUPT" in table
    # Read-only: the damaged file is left exactly as it was.
    assert data.read_bytes() == damaged


def test_clear_empties_the_cache_for_every_process(warp_cache_dir, scripts):
    make_square(warp_cache_dir, scripts)
    proc = cli(warp_cache_dir, "clear", "cli_mod.square")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"cleared {stem_of(warp_cache_dir, 'square')} (2 entries)"
    figures = stats(warp_cache_dir, "cli_mod.square")
    assert (figures["entries"], figures["hits"], figures["misses"]) == (0, 0, 0)
    assert figures["condition"] == "ok"
    # A process of the same function finds nothing cached.
    out = run_code(
        "import cli_mod\ncli_mod.square(1)\nprint(cli_mod.square.cache_info().hits)\n",
        warp_cache_dir,
        cwd=scripts,
    )
    assert out.stdout.strip() == "0"
    assert cli(warp_cache_dir, "clear", "cli_mod.nothing").returncode == 2


def test_remove_stale_keeps_what_a_live_process_maps(warp_cache_dir, scripts):
    make_square(warp_cache_dir, scripts)  # its process exited: nobody maps square and cube
    live = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, cli_live\ncli_live.triple(2)\nprint('ready', flush=True)\n"
            "sys.stdin.readline()\ncli_live.triple(2)\nprint(cli_live.triple.cache_info().hits)\n",
        ],
        cwd=scripts,
        env=child_env(warp_cache_dir),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert live.stdout.readline().strip() == "ready"
        square, cube = stem_of(warp_cache_dir, "square"), stem_of(warp_cache_dir, "cube")
        triple = stem_of(warp_cache_dir, "triple", "cli_live")
        # An old-format pair: a copy of square's files whose lock file says version 1.
        for suffix in ("data", "lock"):
            src = (warp_cache_dir / f"{square}.{suffix}").read_bytes()
            (warp_cache_dir / f"old.fmt.{suffix}").write_bytes(src)
        old_lock = warp_cache_dir / "old.fmt.lock"
        with open(old_lock, "r+b") as out:
            out.seek(lock_file_word_offset("format_version"))
            out.write((1).to_bytes(8, sys.byteorder))
        proc = cli(warp_cache_dir, "remove", "--stale")
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        for stem in (square, cube):
            assert f"removed {stem}: in this format; no live process maps it" in lines, lines
        assert any(
            line.startswith(f"kept {triple}: in use by live process(es) .live.") for line in lines
        ), lines
        assert any(
            line.startswith("removed old.fmt: outdated (format version 1") for line in lines
        ), lines
        assert lines[-1] == f"3 of 4 caches removed from {warp_cache_dir}"
        names = set(os.listdir(warp_cache_dir))
        assert {f"{triple}.data", f"{triple}.lock"} <= names
        gone = {f"{s}.{x}" for s in (square, cube, "old.fmt") for x in ("data", "lock")}
        assert not gone & names
        # The live process still uses its cache.
        live.stdin.write("go\n")
        live.stdin.flush()
        assert live.stdout.readline().strip() == "1"
    finally:
        live.kill()
        live.wait(30)
    # Now nobody maps triple either.
    proc = cli(warp_cache_dir, "remove", "--stale")
    assert f"removed {triple}: in this format; no live process maps it" in proc.stdout, proc.stdout
    assert cli(warp_cache_dir, "remove").returncode == 2


@needs_failpoints
def test_a_dead_writer_is_reported_and_a_stopped_one_does_not_hang_list(warp_cache_dir, scripts):
    make_square(warp_cache_dir, scripts)
    stem = stem_of(warp_cache_dir, "square")
    lock = warp_cache_dir / f"{stem}.lock"
    # A writer killed with the lock held, inside its write section.
    code = "import cli_mod\ncli_mod.square(5)\n"
    proc = run_code(
        code, warp_cache_dir, cwd=scripts, check=False, WARP_CACHE_FAILPOINT="mid_write:kill"
    )
    assert proc.returncode == -signal.SIGKILL
    report = json.loads(cli(warp_cache_dir, "list", "--json").stdout)
    (square,) = [c for c in report["caches"] if c["name"] == stem]
    assert square["lock_held_by_dead"] is True and square["lock_owner"]["state"] == "dead"
    assert square["condition"] == "corrupt" and "middle of a write" in square["problem"]
    listed = cli(warp_cache_dir, "list")
    assert listed.returncode == 1 and "DEAD" in listed.stdout

    # A live writer stopped inside its section: list waits a bounded time and takes nothing.
    cli(warp_cache_dir, "clear", "cli_mod.square")  # takes the lock over, resets
    state_offset = lock_file_word_offset("state")
    stopped = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=scripts,
        env=child_env(warp_cache_dir, WARP_CACHE_FAILPOINT="mid_write:stop"),
    )
    try:
        wait_for_state(stopped.pid, "T")
        state = lock.read_bytes()[state_offset : state_offset + 8]
        proc = cli(warp_cache_dir, "list", "--json", timeout=30)
        assert proc.returncode == 0, proc.stderr
        (square,) = [c for c in json.loads(proc.stdout)["caches"] if c["name"] == stem]
        assert square["condition"] == "busy" and square["lock_owner"]["state"] == "alive"
        assert lock.read_bytes()[state_offset : state_offset + 8] == state, "lock untouched"
    finally:
        stopped.send_signal(signal.SIGCONT)
        stopped.kill()
        stopped.wait(30)


@pytest.mark.parametrize(
    "stem, module, function",
    [
        ("app.fib.71055aa0dd3097fd", "app", "fib"),
        ("pkg.mod.Prices.quote.0123456789abcdef", "pkg.mod", "Prices.quote"),
        ("__main__-1a2b3c4d.main.0123456789abcdef", "__main__-1a2b3c4d", "main"),
        (
            "m.outer._locals_.inner--" + "0" * 32 + ".0123456789abcdef",
            "m",
            "outer._locals_.inner...",
        ),
        ("unit", None, "unit"),
    ],
)
def test_names_split_into_module_and_function(stem, module, function):
    from warp_cache.__main__ import split_name

    parts = split_name(stem)
    assert (parts["module"], parts["function"]) == (module, function)
