#!/usr/bin/env python3
"""libCacheSim oracle for warp_cache's hit rates.

Replays traces through libCacheSim (PyPI ``libcachesim``) at 1%, 5% and 10% of each trace's
unique keys and records the miss counts of its ``Sieve`` (plus ``LRU``, ``FIFO`` and
``Belady`` for the simulator's other policies) in ``corpora/oracle/libcachesim_sieve.json``.

* ``tests/rust/hit_rate_oracle.rs`` (no Python) asserts that the production SIEVE and the
  reference SIEVE reproduce every ``misses`` value exactly, and that the Rust trace readers
  produce the same key sequence (``requests``, ``unique_keys``, ``keys_fnv64``).
* ``tests/python/test_libcachesim_oracle.py`` re-runs libCacheSim live and asserts it still
  gives the committed numbers.

The readers below re-implement the formats of ``../shared/traces/README.md`` exactly as the
Rust readers (``sim/src/trace.rs``) do; ``keys_fnv64`` (a 64-bit FNV-style hash over the key
sequence) proves both sides replay the same keys. libCacheSim is fed the keys as an
``oracleGeneral`` binary file (24-byte records, object size 1).

Usage::

    python3 tests/python/oracle_libcachesim.py            # print the table
    python3 tests/python/oracle_libcachesim.py --write    # (re)write the JSON
"""

from __future__ import annotations

import argparse
import gzip
import json
import lzma
import os
import struct
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional

ROOT = Path(__file__).resolve().parents[2]
ORACLE_JSON = ROOT / "corpora" / "oracle" / "libcachesim_sieve.json"
PERCENTS = (1, 5, 10)
# libCacheSim sizes its hash table 2**hashpower up front (default 24: 128 MiB per cache);
# the table only affects speed, not which keys hit.
HASHPOWER = 18

# (trace id, source, format). Source "shared" is ../shared/traces (absent on a fresh
# checkout: skipped), "corpora" is the repository's corpora/ folder (always present).
TRACES = [
    ("libCacheSim/cloudPhysicsIO.txt", "shared", "txt"),
    ("caffeine/lirs/multi1.trace.gz", "shared", "txt"),
    ("caffeine/lirs/sprite.trace.gz", "shared", "txt"),
    ("caffeine/cache2k/web07.trace.xz", "shared", "be32"),
    ("caffeine/corda/trace_vaultservice.gz", "shared", "be64"),
    ("caffeine/address/twolf.trace.gz", "shared", "addr"),
    ("traces/zipf-0.8.txt.gz", "corpora", "txt"),
    ("traces/zipf-1.0.txt.gz", "corpora", "txt"),
    ("traces/scan.txt.gz", "corpora", "txt"),
    ("traces/loop.txt.gz", "corpora", "txt"),
    ("traces/shift.txt.gz", "corpora", "txt"),
    ("traces/mixed.txt.gz", "corpora", "txt"),
]

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
MASK64 = (1 << 64) - 1


def shared_traces_dir() -> Path:
    """``$WARP_CACHE_TRACES`` or ``<repo>/../shared/traces``."""
    override = os.environ.get("WARP_CACHE_TRACES")
    return Path(override) if override else ROOT.parent / "shared" / "traces"


def trace_path(trace: str, source: str) -> Path:
    base = shared_traces_dir() if source == "shared" else ROOT / "corpora"
    return base / trace


def open_decompressed(path: Path):
    """Opens ``path`` for binary reading, decompressing gzip/xz by magic bytes."""
    with open(path, "rb") as f:
        head = f.read(6)
    if head.startswith(b"\x1f\x8b"):
        return gzip.open(path, "rb")
    if head.startswith(b"\xfd7zXZ\x00"):
        return lzma.open(path, "rb")
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        raise ValueError(f"{path}: zstd-compressed traces are not supported")
    return open(path, "rb")


def _text_lines(path: Path) -> Iterable[str]:
    with open_decompressed(path) as f:
        for raw in f:
            line = raw.decode("utf-8").strip()
            if not line or line.startswith("*"):
                continue
            yield line


def _read_txt(path: Path) -> List[int]:
    keys = []
    for line in _text_lines(path):
        if not (line.isascii() and line.isdigit()) or int(line) > MASK64:
            raise ValueError(f"{path}: {line!r} is not a decimal 64-bit key")
        keys.append(int(line))
    return keys


def _read_addr(path: Path) -> List[int]:
    keys = []
    for line in _text_lines(path):
        fields = line.split()
        hex_digits = fields[1][2:] if len(fields) >= 2 and fields[1][:2] in ("0x", "0X") else ""
        if not hex_digits or any(c not in "0123456789abcdefABCDEF" for c in hex_digits) \
                or int(hex_digits, 16) > MASK64:
            raise ValueError(f"{path}: {line!r} is not '<op> 0x<hex address> <n>'")
        keys.append(int(hex_digits, 16))
    return keys


def _read_binary(path: Path, record: str, size: int, index: int) -> List[int]:
    with open_decompressed(path) as f:
        data = f.read()
    if len(data) % size:
        raise ValueError(f"{path}: {len(data) % size} bytes left over after {size}-byte records")
    return [fields[index] for fields in struct.iter_unpack(record, data)]


READERS: Dict[str, Callable[[Path], List[int]]] = {
    "txt": _read_txt,
    "addr": _read_addr,
    "be32": lambda p: _read_binary(p, ">I", 4, 0),
    "be64": lambda p: _read_binary(p, ">Q", 8, 0),
    "oracle-general": lambda p: _read_binary(p, "<IQIq", 24, 1),
}


def read_keys(path: Path, fmt: str) -> List[int]:
    return READERS[fmt](path)


def keys_fnv64(keys: Iterable[int]) -> str:
    """FNV-style hash over the 64-bit keys (one multiply per key); the Rust test computes
    the same (``tests/rust/support.rs::keys_fnv64``)."""
    h = FNV_OFFSET
    for key in keys:
        h = ((h ^ key) * FNV_PRIME) & MASK64
    return f"{h:016x}"


def capacity_for(percent: int, unique_keys: int) -> int:
    """``max(1, round_half_up(percent / 100 * unique_keys))`` in integers, as
    ``sim::report::CapacitySpec::resolve``."""
    return max(1, (percent * 1000 * unique_keys + 50_000) // 100_000)


def write_oracle_general(keys: List[int], path: str) -> None:
    """libCacheSim ``oracleGeneral``: {u32 clock_time, u64 obj_id, u32 obj_size,
    i64 next_access_vtime}; clock 0, size 1, next access = index of the next request of the
    same key or -1 (Belady needs it; the others ignore it)."""
    next_use = [-1] * len(keys)
    last: Dict[int, int] = {}
    for i in range(len(keys) - 1, -1, -1):
        next_use[i] = last.get(keys[i], -1)
        last[keys[i]] = i
    record = struct.Struct("<IQIq")
    with open(path, "wb") as f:
        f.write(b"".join(record.pack(0, k, 1, n) for k, n in zip(keys, next_use)))


def libcachesim_misses(keys: List[int], capacities: List[int]) -> Dict[int, Dict[str, int]]:
    """Misses of libCacheSim's Sieve, LRU, FIFO and Belady per capacity."""
    import libcachesim as lcs

    fd, tmp = tempfile.mkstemp(suffix=".oracleGeneral")
    os.close(fd)
    try:
        write_oracle_general(keys, tmp)
        out: Dict[int, Dict[str, int]] = {}
        for capacity in capacities:
            row = {}
            for name, cls in (("sieve", lcs.Sieve), ("lru", lcs.LRU), ("fifo", lcs.FIFO),
                              ("optimal", lcs.Belady)):
                reader = lcs.TraceReader(tmp, lcs.TraceType.ORACLE_GENERAL_TRACE)
                cache = cls(capacity, hashpower=HASHPOWER)
                miss_ratio, _byte_miss_ratio = cache.process_trace(reader)
                row[name] = int(round(miss_ratio * len(keys)))
            out[capacity] = row
        return out
    finally:
        os.unlink(tmp)


def entries_for(trace: str, source: str, fmt: str) -> List[dict]:
    """The oracle entries of one trace (one per percentage)."""
    keys = read_keys(trace_path(trace, source), fmt)
    unique_keys = len(set(keys))
    digest = keys_fnv64(keys)
    capacities = [capacity_for(p, unique_keys) for p in PERCENTS]
    misses = libcachesim_misses(keys, sorted(set(capacities)))
    return [
        {
            "trace": trace,
            "source": source,
            "format": fmt,
            "percent": percent,
            "capacity": capacity,
            "requests": len(keys),
            "unique_keys": unique_keys,
            "keys_fnv64": digest,
            "misses": misses[capacity]["sieve"],
            "lru_misses": misses[capacity]["lru"],
            "fifo_misses": misses[capacity]["fifo"],
            "optimal_misses": misses[capacity]["optimal"],
        }
        for percent, capacity in zip(PERCENTS, capacities)
    ]


def compute_all(only_present: bool = False) -> List[dict]:
    entries = []
    for trace, source, fmt in TRACES:
        if not trace_path(trace, source).exists():
            if only_present:
                continue
            raise FileNotFoundError(f"trace {trace_path(trace, source)} is missing")
        entries.extend(entries_for(trace, source, fmt))
    return entries


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"write {ORACLE_JSON.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    import libcachesim

    entries = compute_all(only_present=not args.write)
    print(f"{'trace':40} {'%':>3} {'capacity':>8} {'requests':>9} {'sieve':>9} {'lru':>9} {'optimal':>9}")
    for e in entries:
        n = e["requests"]
        print(f"{e['trace']:40} {e['percent']:>3} {e['capacity']:>8} {n:>9} "
              f"{e['misses'] / n:9.4f} {e['lru_misses'] / n:9.4f} {e['optimal_misses'] / n:9.4f}")
    if args.write:
        document = {
            "generator": "tests/python/oracle_libcachesim.py --write",
            "libcachesim_version": getattr(libcachesim, "__version__", "unknown"),
            "capacity_rule": "max(1, round_half_up(percent / 100 * unique_keys))",
            "keys_hash": "h = 0xcbf29ce484222325; for key: h = ((h ^ key) * 0x100000001b3) mod 2^64",
            "entries": entries,
        }
        ORACLE_JSON.parent.mkdir(parents=True, exist_ok=True)
        ORACLE_JSON.write_text(json.dumps(document, indent=1) + "\n")
        print(f"wrote {ORACLE_JSON}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
