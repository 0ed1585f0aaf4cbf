"""``python -m warp_cache``: what lives in the shared backend's cache directory.

Commands (``--dir DIR`` overrides the directory: else ``$WARP_CACHE_DIR``, else the
platform default)::

    list [--json]        every shared cache: name, entries, size, hit ratio, writer lock
    stats NAME           one cache's figures as JSON
    clear NAME           empties one cache (through the writer lock, as cache_clear())
    remove --stale       removes the caches no live process maps (and old-format files)

``list`` and ``stats`` are read-only: they copy the files, never lock or write them, and
exit 1 (naming the file and the problem) when a cache is damaged. An unknown NAME exits 2.
Everything about the file format is in the native module (``core/src/shm/inspect.rs``).

The files do not record pids: the writer lock and the mapper table hold *liveness ids*, the
names of presence files ``.live.<id>`` that each live process keeps locked.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
from collections.abc import Sequence
from typing import Any, Optional

#: ``<family>.<16 hex>``: the file-name stem of a function's cache (``_shared.cache_name``).
_STEM = re.compile(r"^(?P<family>.+)\.(?P<fingerprint>[0-9a-f]{16})$")
#: A family name too long or not plain is kept as ``<readable prefix>--<32 hex>``.
_HASHED = re.compile(r"^(?P<prefix>.*)--[0-9a-f]{32}$")

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


class _UsageError(Exception):
    """A bad NAME (exit 2)."""


def _native() -> Any:
    try:
        # By name: the native module has no stub of its own (pyproject's mypy override).
        native = importlib.import_module("warp_cache._warp_cache")
    except ImportError as exc:  # pragma: no cover - broken installation
        raise SystemExit(f"warp_cache: the native module cannot be loaded: {exc}") from None
    if not hasattr(native, "_shm_inspect"):  # pragma: no cover - non-POSIX platforms
        raise SystemExit("warp_cache: this platform has no shared backend")
    return native


def split_name(stem: str) -> dict[str, Optional[str]]:
    """Best-effort ``module`` and ``function`` of a stem. The files record only the name
    ``<module>.<qualname>.<fingerprint>``, and both parts may contain dots: the function is
    taken to start at the first CapWords component (a class), or at the function a
    ``<locals>`` is in, or else to be the last component. A hashed (long or non-plain) name
    shows its readable prefix followed by ``...``."""
    match = _STEM.match(stem)
    family, fingerprint = (match["family"], match["fingerprint"]) if match else (stem, None)
    hashed = _HASHED.match(family)
    readable = hashed["prefix"] if hashed else family
    parts = [p for p in readable.split(".") if p]
    # A class (CapWords) or the function around a ``<locals>`` (sanitized to ``_locals_``).
    starts = [i for i, p in enumerate(parts) if i > 0 and p[:1].isupper()]
    starts += [i - 1 for i, p in enumerate(parts) if i > 1 and p == "_locals_"]
    start = min(starts, default=len(parts) - 1)
    start = max(start, 1) if len(parts) > 1 else 0
    return {
        "family": family,
        "fingerprint": fingerprint,
        "module": ".".join(parts[:start]) or None,
        "function": ".".join(parts[start:]) + ("..." if hashed else ""),
    }


def _hit_ratio(cache: dict[str, Any]) -> Optional[float]:
    hits, misses = cache.get("hits"), cache.get("misses")
    if hits is None or misses is None or hits + misses == 0:
        return None
    return float(hits) / float(hits + misses)


def _figures(directory: str, cache: dict[str, Any]) -> dict[str, Any]:
    """The native dict, with the derived figures the commands show."""
    sizes = [cache.get("data_file_bytes"), cache.get("lock_file_bytes")]
    out = dict(cache)
    out.update(split_name(cache["name"]))
    out["dir"] = directory
    out["bytes"] = sum(s for s in sizes if s is not None)
    out["hit_ratio"] = _hit_ratio(cache)
    return out


def _inspect(native: Any, directory: Optional[str], stem: Optional[str] = None) -> dict[str, Any]:
    report: dict[str, Any] = native._shm_inspect(directory, stem)
    report["dir"] = str(report["dir"])
    report["caches"] = [_figures(report["dir"], c) for c in report["caches"]]
    return report


def resolve(native: Any, directory: Optional[str], name: str) -> str:
    """The stem NAME means: an exact stem, or the ``module.qualname`` of exactly one."""
    stems: list[str] = native._shm_stems(directory) or []
    if name in stems:
        return name
    matches = [s for s in stems if split_name(s)["family"] == name]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise _UsageError(
            f"{name!r} has {len(matches)} cached versions; name one: " + ", ".join(matches)
        )
    raise _UsageError(f"no shared cache named {name!r} in {_dir(native, directory)}")


def _dir(native: Any, directory: Optional[str]) -> str:
    return str(native._shm_cache_dir(directory))


def _size(n: Optional[int]) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def _lock_cell(cache: dict[str, Any]) -> str:
    owner = cache.get("lock_owner")
    if owner is None:
        return "free"
    return f"{owner['liveness_id']} {'DEAD' if owner['state'] == 'dead' else owner['state']}"


def _row(cache: dict[str, Any]) -> tuple[str, ...]:
    ratio = cache["hit_ratio"]
    live = sum(1 for m in cache["mappers"] if m["state"] != "dead")
    status = cache["condition"]
    return (
        cache["function"] or "-",
        cache["module"] or "-",
        "-" if cache["entries"] is None else str(cache["entries"]),
        "-" if cache["max_size"] is None else str(cache["max_size"]),
        _size(cache["bytes"]),
        "-" if ratio is None else f"{100 * ratio:.1f}%",
        _lock_cell(cache),
        f"{live}/{len(cache['mappers'])}{'+' if cache['mappers_overflow'] else ''}",
        status.upper() if status == "corrupt" else status,
    )


_HEADER = ("FUNCTION", "MODULE", "ENTRIES", "MAX", "BYTES", "HIT%", "WRITER LOCK",
           "MAPPERS", "STATUS")  # fmt: skip


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in [_HEADER, *rows]) for i in range(len(_HEADER))]
    numeric = {2, 3, 4, 5}
    lines = []
    for row in [_HEADER, *rows]:
        cells = [c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in
                 enumerate(zip(row, widths))]  # fmt: skip
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _problems(report: dict[str, Any]) -> list[str]:
    return [
        f"{report['dir']}/{c['problem_file']}: {c['problem']}"
        for c in report["caches"]
        if c["condition"] == "corrupt"
    ]


def cmd_list(native: Any, args: argparse.Namespace) -> int:
    report = _inspect(native, args.dir)
    problems = _problems(report)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    elif not report["exists"]:
        print(f"no cache directory {report['dir']}: no shared caches")
    elif not report["caches"]:
        print(f"no shared caches in {report['dir']}")
    else:
        print(f"shared caches in {report['dir']}:")
        print(_table([_row(c) for c in report["caches"]]))
        for cache in report["caches"]:
            if cache["condition"] in ("outdated", "busy"):
                note = cache["problem"] or "a live writer kept writing: figures unchecked"
                print(f"{cache['name']}: {cache['condition']}: {note}")
        print(
            "(writer lock and mappers are liveness ids, the presence files .live.<id> of "
            "live processes; the files record no pids)"
        )
    for problem in problems:
        print(f"warp_cache: corrupt cache file {problem}", file=sys.stderr)
    return EXIT_PROBLEM if problems else EXIT_OK


def cmd_stats(native: Any, args: argparse.Namespace) -> int:
    stem = resolve(native, args.dir, args.name)
    report = _inspect(native, args.dir, stem)
    if not report["caches"]:  # removed between the listing and now
        raise _UsageError(f"no shared cache named {args.name!r} in {report['dir']}")
    print(json.dumps(report["caches"][0], indent=2, sort_keys=True))
    problems = _problems(report)
    for problem in problems:
        print(f"warp_cache: corrupt cache file {problem}", file=sys.stderr)
    return EXIT_PROBLEM if problems else EXIT_OK


def cmd_clear(native: Any, args: argparse.Namespace) -> int:
    stem = resolve(native, args.dir, args.name)
    before = _inspect(native, args.dir, stem)["caches"]
    native._shm_clear(args.dir, stem)
    entries = before[0]["entries"] if before else None
    print(f"cleared {stem}" + ("" if entries is None else f" ({entries} entries)"))
    return EXIT_OK


def cmd_remove(native: Any, args: argparse.Namespace) -> int:
    if not args.stale:
        raise _UsageError("remove needs --stale (the only kind of removal there is)")
    report = native._shm_remove_stale(args.dir)
    directory = str(report["dir"])
    if not report["exists"]:
        print(f"no cache directory {directory}: nothing to remove")
        return EXIT_OK
    failed = False
    for cache in report["caches"]:
        verb = "removed" if cache["removed"] else "kept"
        failed |= "removing it failed" in cache["reason"]
        print(f"{verb} {cache['name']}: {cache['reason']}")
    for name in report["swept"]:
        print(f"removed {name}: a dead process's presence or temporary file")
    removed = sum(1 for c in report["caches"] if c["removed"])
    print(f"{removed} of {len(report['caches'])} caches removed from {directory}")
    return EXIT_PROBLEM if failed else EXIT_OK


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m warp_cache",
        description="Inspect and clean the shared backend's cache directory.",
    )
    top.add_argument("--dir", help="cache directory (default: $WARP_CACHE_DIR or the platform's)")
    sub = top.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="every shared cache of this user (read-only)")
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")
    stats = sub.add_parser("stats", help="one cache's figures as JSON (read-only)")
    clear = sub.add_parser("clear", help="empty one cache")
    for command in (stats, clear):
        command.add_argument("name", help="file-name stem, or module.qualname of one version")
    remove = sub.add_parser("remove", help="remove caches no live process maps")
    remove.add_argument("--stale", action="store_true", help="old-format or unmapped caches")
    for command in (listing, stats, clear, remove):
        command.add_argument("--dir", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return top


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    native = _native()
    commands = {"list": cmd_list, "stats": cmd_stats, "clear": cmd_clear, "remove": cmd_remove}
    try:
        return commands[args.command](native, args)
    except _UsageError as exc:
        print(f"warp_cache: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, RuntimeError, ValueError, MemoryError) as exc:
        print(f"warp_cache: {exc}", file=sys.stderr)
        return EXIT_PROBLEM


if __name__ == "__main__":
    sys.exit(main())
