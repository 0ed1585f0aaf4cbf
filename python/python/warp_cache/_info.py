"""``CacheInfo``: what ``cache_info()`` returns on every backend.

A named tuple of exactly ``(hits, misses, max_size, current_size)``, as ``functools.lru_cache``'s
is, so code written for ``lru_cache`` (comparing with plain tuples, unpacking into four names)
works unchanged. The backend-specific counters are attributes outside the tuple: they take no
part in equality, hashing, iteration or ``_asdict()``.

This module imports nothing of the extension: the extension builds its ``CacheInfo`` objects
by calling this class.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, Optional

if TYPE_CHECKING:
    from typing_extensions import Self, disjoint_base
else:  # PEP 800's marker for type checkers only: no runtime dependency for it

    def disjoint_base(cls: type) -> type:
        return cls


class _Counts(NamedTuple):
    hits: int
    misses: int
    max_size: int
    current_size: int


# The attributes outside the tuple (None where a backend does not report them).
_EXTRAS = ("oversize_skips", "space_skips", "read_retries", "lock_waits", "lock_skips", "fallback")


@disjoint_base  # a tuple subclass with an instance dict
class CacheInfo(_Counts):
    """Statistics of one cached function: ``CacheInfo(hits=1, misses=1, max_size=100,
    current_size=1)``, equal to the tuple ``(1, 1, 100, 1)``.

    Outside the tuple:

    - ``oversize_skips``: results not cached because their key or pickled value was over the
      shared backend's limits (counted by every process using the cache); ``None`` on the
      memory backend.
    - ``space_skips``: results not cached because the shared cache's file could not grow (its
      filesystem, ``/dev/shm``, was full); ``None`` on the memory backend.
    - ``read_retries`` and ``lock_waits``: contention in the shared cache, from every process
      using it: lock-free reads that were redone or held up by a write in progress, and writes
      that found the writer lock held and waited; ``None`` on the memory backend.
    - ``lock_skips``: results not cached because another live process held the shared
      cache's writer lock without progress (stopped or descheduled inside its write) for the
      insert's patience, 100 microseconds; ``None`` on the memory backend.
    - ``fallback``: why a function decorated with ``backend="shared"`` is cached in this
      process only; ``None`` normally.
    """

    # No __slots__: a tuple subclass keeps its extra attributes in the instance dict, which
    # pickling and copying carry along with the tuple. The class values are what an instance
    # made without `__new__` (the named tuple's own `_make`) shows.
    oversize_skips: Optional[int] = None
    space_skips: Optional[int] = None
    read_retries: Optional[int] = None
    lock_waits: Optional[int] = None
    lock_skips: Optional[int] = None
    fallback: Optional[str] = None

    def __new__(
        cls,
        hits: int,
        misses: int,
        max_size: int,
        current_size: int,
        *,
        oversize_skips: Optional[int] = None,
        space_skips: Optional[int] = None,
        read_retries: Optional[int] = None,
        lock_waits: Optional[int] = None,
        lock_skips: Optional[int] = None,
        fallback: Optional[str] = None,
    ) -> CacheInfo:
        info = super().__new__(cls, hits, misses, max_size, current_size)
        object.__setattr__(info, "oversize_skips", oversize_skips)
        object.__setattr__(info, "space_skips", space_skips)
        object.__setattr__(info, "read_retries", read_retries)
        object.__setattr__(info, "lock_waits", lock_waits)
        object.__setattr__(info, "lock_skips", lock_skips)
        object.__setattr__(info, "fallback", fallback)
        return info

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"CacheInfo is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"CacheInfo is immutable: cannot delete {name!r}")

    def _replace(self, **changes: Any) -> Self:
        """A copy with some counts or extras changed; the others (extras included) are kept."""
        counts: dict[str, Any] = self._asdict()
        extras: dict[str, Any] = {name: getattr(self, name, None) for name in _EXTRAS}
        for name, value in changes.items():
            if name in counts:
                counts[name] = value
            elif name in extras:
                extras[name] = value
            else:
                raise ValueError(f"Got unexpected field names: {[name]!r}")
        return type(self)(*counts.values(), **extras)

    def __repr__(self) -> str:
        shown = [f"{name}={value!r}" for name, value in zip(self._fields, self)]
        shown += [
            f"{name}={getattr(self, name)!r}"
            for name in _EXTRAS
            if getattr(self, name, None) is not None
        ]
        return f"CacheInfo({', '.join(shown)})"


# Pickles and reprs name the public module.
CacheInfo.__module__ = "warp_cache"
