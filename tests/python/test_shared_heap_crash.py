"""Writers killed inside the extent heap's critical sections (format 4): in the middle of a
compaction and of an allocation. The next process recovers (the interrupted section resets
the table), serves no wrong or torn value, and caches again."""

from __future__ import annotations

import signal

import pytest
from shared_util import needs_failpoints, run_code, write_script

#: 64 entries; a heap of 16 KiB past the fixed part (11,776 B for 64 entries): about 14
#: values of 1,000 bytes fit, so the budget binds long before max_size.
MODULE = """
from warp_cache import cache

FIXED_BYTES = 11_776
HEAP_BYTES = 16 << 10

@cache(backend="shared", max_size=64, max_bytes=FIXED_BYTES + HEAP_BYTES)
def sized(n, tag):
    return bytes([tag % 251]) * n
"""

#: Fills the heap with 1,000-byte values (evicting by bytes: freed extents of their class are
#: reused, never compacted), then stores a 1,500-byte value: its class has no free extent and
#: the bump pointer is at the budget, so the writer evicts until enough bytes are free and
#: compacts, where the failpoint kills it.
FILL_THEN_COMPACT = """
import heap_mod
for tag in range(40):
    assert heap_mod.sized(1000, tag) == bytes([tag]) * 1000
assert heap_mod.sized(1000, 39) == bytes([39]) * 1000
info = heap_mod.sized.cache_info()
assert info.current_size < 20 and info.hits == 1, info
print("filled", flush=True)
heap_mod.sized(1500, 99)
print("survived", flush=True)
"""

CHECK_AFTER = """
import heap_mod
f = heap_mod.sized
resets_before = f._shared_diagnostics()["resets"]
# Every value served is the right one (none torn, none foreign), then cached again.
for tag in range(40):
    assert f(1000, tag) == bytes([tag]) * 1000, tag
assert f(1500, 99) == bytes([99]) * 1500
hits = f.cache_info().hits
assert f(1500, 99) == bytes([99]) * 1500
assert f.cache_info().hits == hits + 1, "cached again after the recovery"
f._shared_validate()
print(resets_before, f._shared_diagnostics()["resets"], flush=True)
"""


@pytest.fixture
def heap_scripts(tmp_path):
    directory = tmp_path / "scripts"
    write_script(directory, "heap_mod.py", MODULE)
    return directory


@needs_failpoints
@pytest.mark.parametrize("point", ["mid_compact", "mid_alloc"])
def test_a_writer_killed_inside_the_heap_is_recovered(warp_cache_dir, heap_scripts, point):
    code = FILL_THEN_COMPACT
    if point == "mid_alloc":
        # Every insert allocates: die at the first one after the fill.
        code = code.replace("print(\"filled\", flush=True)\n", "print(\"filled\", flush=True)\n"
                            "import warp_cache._warp_cache as native\n"
                            "native._set_failpoint('mid_alloc:kill')\n")
        env = {}
    else:
        env = {"WARP_CACHE_FAILPOINT": "mid_compact:kill"}
    proc = run_code(code, warp_cache_dir, cwd=heap_scripts, check=False, **env)
    assert proc.stdout.splitlines() == ["filled"], (proc.stdout, proc.stderr)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    after = run_code(CHECK_AFTER, warp_cache_dir, cwd=heap_scripts)
    before, now = map(int, after.stdout.split())
    assert now >= before + 1, "the interrupted section reset the table"


def test_the_fill_compacts_without_failpoints(warp_cache_dir, heap_scripts):
    """The same workload unarmed: it completes, and the heap compacted at least once (the
    failpoint test above relies on reaching a compaction)."""
    code = FILL_THEN_COMPACT + (
        "print(heap_mod.sized._shared_diagnostics()['heap_compactions'], flush=True)\n"
    )
    proc = run_code(code, warp_cache_dir, cwd=heap_scripts, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[:2] == ["filled", "survived"], lines
    assert int(lines[2]) >= 1, "a compaction ran"
