"""Live libCacheSim check of the committed hit-rate oracle.

``corpora/oracle/libcachesim_sieve.json`` holds libCacheSim's miss counts; the Rust test
``tests/rust/hit_rate_oracle.rs`` holds warp_cache's SIEVE to them. This test re-runs
libCacheSim on the same traces and asserts it still gives exactly the committed numbers, so
the oracle itself is checked on every CI run. Skips cleanly when ``libcachesim`` is not
installed or a trace (``../shared/traces``) is absent.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import pytest

_SCRIPT = Path(__file__).with_name("oracle_libcachesim.py")
_spec = importlib.util.spec_from_file_location("oracle_libcachesim", _SCRIPT)
assert _spec is not None and _spec.loader is not None
oracle = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("oracle_libcachesim", oracle)
_spec.loader.exec_module(oracle)


def _load_entries():
    document = json.loads(oracle.ORACLE_JSON.read_text())
    return document["entries"]


ENTRIES = _load_entries()
BY_TRACE = defaultdict(list)
for _entry in ENTRIES:
    BY_TRACE[(_entry["trace"], _entry["source"], _entry["format"])].append(_entry)


def test_oracle_covers_real_and_generated_traces_at_three_sizes():
    """>= 3 real traces and generated Zipf and scan traces, each at 1%, 5% and 10%."""
    real = {t for (t, source, _) in BY_TRACE if source == "shared"}
    generated = {t for (t, source, _) in BY_TRACE if source == "corpora"}
    assert len(real) >= 3, real
    assert any("zipf" in t for t in generated) and any("scan" in t for t in generated), generated
    for key, entries in BY_TRACE.items():
        assert sorted(e["percent"] for e in entries) == [1, 5, 10], key
        for e in entries:
            assert e["capacity"] == oracle.capacity_for(e["percent"], e["unique_keys"]), e
            assert 0 < e["optimal_misses"] <= e["misses"] <= e["requests"], e
    assert {(t, s, f) for (t, s, f) in BY_TRACE} == set(oracle.TRACES), (
        "the JSON is stale against oracle_libcachesim.TRACES: rerun "
        "python3 tests/python/oracle_libcachesim.py --write"
    )


def test_capacity_rule_rounds_half_up():
    assert oracle.capacity_for(10, 7075) == 708  # 707.5
    assert oracle.capacity_for(1, 48974) == 490  # 489.74
    assert oracle.capacity_for(1, 10) == 1  # never 0


def test_readers_on_tiny_fixtures(tmp_path):
    import gzip
    import lzma
    import struct

    p = tmp_path / "t.txt.gz"
    p.write_bytes(gzip.compress(b"1\r\n*\n\n22\n"))
    assert oracle.read_keys(p, "txt") == [1, 22]
    p = tmp_path / "t.xz"
    p.write_bytes(lzma.compress(struct.pack(">II", 1, 0xFFFFFFFE)))
    assert oracle.read_keys(p, "be32") == [1, 0xFFFFFFFE]
    p = tmp_path / "a.gz"
    p.write_bytes(gzip.compress(b"l 0x10 1\ns 0X1f 2\n"))
    assert oracle.read_keys(p, "addr") == [16, 31]
    p = tmp_path / "bad.txt"
    p.write_bytes(b"1\n+2\n")
    with pytest.raises(ValueError):
        oracle.read_keys(p, "txt")
    # The hash the Rust test recomputes (tests/rust/support.rs).
    assert oracle.keys_fnv64([]) == "cbf29ce484222325"
    assert oracle.keys_fnv64([1, 2]) == "082f2407b4e8902a"
    assert oracle.keys_fnv64([2**64 - 1, 0, 7]) == "1e0975e78f08d6b7"
    assert oracle.keys_fnv64([1, 2]) != oracle.keys_fnv64([2, 1])


@pytest.mark.parametrize(
    "trace,source,fmt", sorted(BY_TRACE), ids=[t for (t, _, _) in sorted(BY_TRACE)]
)
def test_libcachesim_still_matches_the_committed_oracle(trace, source, fmt):
    pytest.importorskip("libcachesim")
    path = oracle.trace_path(trace, source)
    if not path.exists():
        # CI runs beside ../shared: a missing trace there is a failure, not a silent pass.
        assert os.environ.get("CI") != "true", f"CI=true: {path} is absent"
        pytest.skip(f"{path} is absent (the shared traces are not part of a fresh checkout)")
    live = {e["percent"]: e for e in oracle.entries_for(trace, source, fmt)}
    for committed in BY_TRACE[(trace, source, fmt)]:
        assert live[committed["percent"]] == committed
