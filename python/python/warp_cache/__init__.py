"""warp_cache: a memoizing decorator with SIEVE eviction, in-process or shared across processes.

    from warp_cache import cache

    @cache(max_size=256, ttl=60.0)
    def expensive(x, y):
        ...

Keys are built like ``functools.lru_cache`` builds them (arguments must be hashable); the
cache holds at most ``max_size`` entries and evicts with SIEVE. ``cache_info()`` and
``cache_clear()`` are available on every decorated function.

``backend="shared"`` keeps the cache in memory-mapped files that every process decorating
the same function uses (arguments and results are serialized: exact ``None``/``bool``/``int``/
``float``/``str``/``bytes`` and flat tuples of them natively, anything else with pickle). What
makes two functions "the same" is documented in ``warp_cache._shared``.
"""

from __future__ import annotations

import asyncio
import collections.abc
import enum
import functools
import inspect
import math
import numbers
import operator
import os
import warnings
from typing import Any, Callable, Optional, Union

from . import _async
from ._info import CacheInfo

# MEMORY_MAX_SIZE_LIMIT (largest memory-backend max_size) and CachedFunction are re-exported.
from ._warp_cache import (
    MEMORY_MAX_SIZE_LIMIT as MEMORY_MAX_SIZE_LIMIT,
    CachedFunction,
    _make_memory,
    _Ready,
)

try:  # absent where the platform has no shared backend (Windows)
    from ._warp_cache import (
        SharedCachedFunction,
        _after_fork_in_child,
        _make_shared as _make_shared_native,
    )
except ImportError:  # pragma: no cover - non-POSIX platforms
    SharedCachedFunction = None
    _make_shared_native = None
else:
    # The shared backend's reusable buffers may be held by a thread that a forked child lacks.
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)

__all__ = [
    "SINGLE_FLIGHT_WAIT_SECONDS",
    "Backend",
    "CacheInfo",
    "CachedFunction",
    "SharedCachedFunction",
    "cache",
]

# An already-completed awaitable is a coroutine for asyncio (create_task, gather, ...).
collections.abc.Coroutine.register(_Ready)


class Backend(enum.IntEnum):
    """Where cached data lives: ``MEMORY`` in the process heap, ``SHARED`` in a memory-mapped
    file visible to every process on the machine."""

    MEMORY = 0
    SHARED = 1


_BACKEND_NAMES = {"memory": Backend.MEMORY, "shared": Backend.SHARED}


def _check_positive_int(name: str, value: Any, what: str = "a positive int") -> int:
    """`value` as an int >= 1, or the error a user of `name` should see (bools are not ints)."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be {what}, got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be {what}, got {value!r}") from None
    if number < 1:
        raise ValueError(f"{name} must be {what}, got {number}")
    return number


def _check_ttl(ttl: Any) -> Optional[float]:
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, numbers.Real):
        raise TypeError(f"ttl must be a number of seconds or None, got {type(ttl).__name__}")
    try:
        seconds = float(ttl)
    except (OverflowError, ValueError):
        raise ValueError(
            f"ttl must be a finite number of seconds >= 0 or None, got {ttl!r}"
        ) from None
    if math.isnan(seconds) or math.isinf(seconds) or seconds < 0:
        raise ValueError(f"ttl must be a finite number of seconds >= 0 or None, got {ttl!r}")
    return seconds


#: How long (seconds) a call that misses a key another thread or process is computing waits
#: for that result before computing it itself, with ``single_flight=True``.
SINGLE_FLIGHT_WAIT_SECONDS = 5.0


def _check_single_flight(single_flight: Any) -> Optional[float]:
    """The wait bound in seconds, or ``None`` for ``single_flight=False``."""
    if single_flight is True:
        return SINGLE_FLIGHT_WAIT_SECONDS
    if single_flight is False:
        return None
    what = "True, False or a wait bound in seconds > 0"
    if not isinstance(single_flight, numbers.Real):
        raise TypeError(f"single_flight must be {what}, got {type(single_flight).__name__}")
    seconds = float(single_flight)
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"single_flight must be {what}, got {single_flight!r}")
    return seconds


# Largest max_key_size / max_value_size: the shared layout stores lengths in 32 bits.
_BYTE_LIMIT_MAX = 2**32 - 1


def _check_byte_limit(name: str, value: Any) -> int:
    limit = _check_positive_int(name, value, "a positive int (bytes)")
    if limit > _BYTE_LIMIT_MAX:
        raise ValueError(f"{name} must be at most {_BYTE_LIMIT_MAX} bytes, got {limit}")
    return limit


def _resolve_backend(backend: Any) -> Backend:
    if isinstance(backend, Backend):
        return backend
    if isinstance(backend, str):
        try:
            return _BACKEND_NAMES[backend]
        except KeyError:
            raise ValueError(
                "backend must be 'memory' or 'shared' (or Backend.MEMORY / Backend.SHARED), "
                f"got {backend!r}"
            ) from None
    if isinstance(backend, int) and not isinstance(backend, bool):
        try:
            return Backend(backend)
        except ValueError:
            raise ValueError(f"backend must be 0 (memory) or 1 (shared), got {backend!r}") from None
    raise TypeError(
        f"backend must be 'memory', 'shared' or a Backend, got {type(backend).__name__}"
    )


def _is_coroutine_callable(func: Any) -> bool:
    if inspect.iscoroutinefunction(func):
        return True
    # A callable instance whose __call__ is a coroutine function. (The class's __call__
    # attribute itself is inspected, not whether the instance is callable: B004 does not apply.)
    if not inspect.isroutine(func) and not inspect.isclass(func):
        return inspect.iscoroutinefunction(getattr(type(func), "__call__", None))  # noqa: B004
    return False


#: Set to a non-empty value other than ``0`` to make every fallback from ``backend="shared"``
#: to an in-process cache an error instead (for operators who prefer to fail fast).
STRICT_ENV = "WARP_CACHE_STRICT"


def _strict() -> bool:
    return os.environ.get(STRICT_ENV, "") not in ("", "0")


def _fallback_cause(exc: BaseException) -> str:
    """What is wrong, in words a user can act on (the native message names the path)."""
    return str(exc.args[1] if isinstance(exc, OSError) and len(exc.args) > 1 else exc)


def _make_shared(
    func: Callable[..., Any],
    *,
    max_size: int,
    ttl: Optional[float],
    max_key_size: int,
    max_value_size: int,
    max_bytes: Optional[int],
    typed: bool,
    single_flight: Optional[float],
    is_async: bool,
) -> Any:
    """Creates the shared-backend wrapper of ``func``: its cache is named after what identifies
    the function across processes (``_shared.cache_name``), and its files are opened now.

    When the files cannot be used (an unusable or foreign directory, something that is not a
    regular file at a cache file's path, no space), the function is not left broken: it gets
    an in-process cache instead, with one ``RuntimeWarning`` naming the cause and the fix, and
    ``cache_info().fallback`` / ``cache_parameters()["fallback"]`` say so. ``WARP_CACHE_STRICT=1``
    turns that into the error instead. Bad parameters are always errors."""
    if _make_shared_native is None:
        raise RuntimeError(
            "backend='shared' is not available on this platform (it needs POSIX shared "
            "memory: Linux or macOS); use backend='memory'"
        )
    from . import _shared

    name = _shared.cache_name(func, typed)
    try:
        return _make_shared_native(
            func,
            name,
            max_size,
            ttl,
            max_key_size,
            max_value_size,
            _async.async_miss if is_async else None,
            typed,
            single_flight,
            max_bytes,
        )
    except (OSError, RuntimeError, MemoryError) as exc:
        # MemoryError: not even the header and table fit in the cache directory's filesystem.
        if _strict():
            raise
        cause = _fallback_cause(exc)
        qualname = getattr(func, "__qualname__", repr(func))
        fix = (
            "to share it, free space in the cache directory's filesystem (/dev/shm: Docker's "
            "--shm-size) or lower max_size"
            if isinstance(exc, MemoryError)
            else "to share it, make the cache directory (WARP_CACHE_DIR) a writable directory "
            "of this user holding only warp_cache files"
        )
        warnings.warn(
            f"warp_cache: backend='shared' cannot be used for {qualname}: {cause}. It is cached "
            f"in this process only (backend='memory'); {fix}. "
            f"Set {STRICT_ENV}=1 to make this an error instead.",
            RuntimeWarning,
            stacklevel=4,
        )
        wrapper = _make_memory(
            func, max_size, ttl, _async.async_miss if is_async else None, typed, single_flight
        )
        wrapper.__dict__["_warp_fallback"] = cause
        return wrapper


def _install_introspection(
    wrapper: Any,
    backend: Backend,
    max_size: int,
    ttl: Optional[float],
    max_key_size: int,
    max_value_size: int,
    max_bytes: Optional[int],
    typed: bool,
    single_flight: Optional[float],
) -> None:
    """``cache_parameters()`` on every wrapper, and the fallback reason in ``cache_info()``
    of a shared function that had to fall back to an in-process cache."""
    fallback = wrapper.__dict__.get("_warp_fallback")
    parameters: dict[str, Any] = {
        "max_size": max_size,
        "ttl": ttl,
        "typed": typed,
        "single_flight": False if single_flight is None else single_flight,
        "backend": backend.name.lower(),
        "max_key_size": max_key_size,
        "max_value_size": max_value_size,
        "max_bytes": max_bytes,
        "fallback": fallback,
    }
    if backend == Backend.SHARED and fallback is None:
        # The effective budget (the default is derived from max_size and the limits).
        parameters["max_bytes"] = wrapper._shared_files()["max_bytes"]

    # Read (and copied) by the native cache_parameters().
    wrapper.__dict__["_warp_parameters"] = parameters
    if fallback is not None:
        native_info = wrapper.cache_info

        def cache_info() -> CacheInfo:
            """Statistics of the in-process cache used instead of the shared one."""
            info = native_info()
            return CacheInfo(
                info.hits, info.misses, info.max_size, info.current_size, fallback=fallback
            )

        wrapper.__dict__["cache_info"] = cache_info


def _make_wrapper(
    func: Callable[..., Any],
    backend: Backend,
    max_size: int,
    ttl: Optional[float],
    max_key_size: int,
    max_value_size: int,
    max_bytes: Optional[int],
    typed: bool,
    single_flight: Optional[float],
    is_async: bool,
) -> Any:
    """The one place where the backend is chosen."""
    if backend == Backend.SHARED:
        return _make_shared(
            func,
            max_size=max_size,
            ttl=ttl,
            max_key_size=max_key_size,
            max_value_size=max_value_size,
            max_bytes=max_bytes,
            typed=typed,
            single_flight=single_flight,
            is_async=is_async,
        )
    return _make_memory(
        func, max_size, ttl, _async.async_miss if is_async else None, typed, single_flight
    )


def _copy_metadata(wrapper: Any, func: Any, is_async: bool) -> None:
    functools.update_wrapper(wrapper, func)
    # Function-like attributes, so that inspect.iscoroutinefunction (which looks at
    # __code__ for function-like objects) and asyncio.iscoroutinefunction behave.
    for name in ("__code__", "__defaults__", "__kwdefaults__"):
        try:
            value = getattr(func, name)
        except AttributeError:
            continue
        wrapper.__dict__.setdefault(name, value)
    if is_async:
        mark = getattr(inspect, "markcoroutinefunction", None)
        if mark is not None:
            mark(wrapper)
        marker = getattr(asyncio.coroutines, "_is_coroutine", None)
        if marker is not None:
            wrapper.__dict__["_is_coroutine"] = marker


def _decorate(
    func: Any,
    backend: Backend,
    max_size: int,
    ttl: Optional[float],
    max_key_size: int,
    max_value_size: int,
    max_bytes: Optional[int],
    typed: bool,
    single_flight: Optional[float],
) -> Any:
    if not callable(func):
        raise TypeError(f"@cache needs a callable, got {type(func).__name__}")
    if inspect.isasyncgenfunction(func) or inspect.isgeneratorfunction(func):
        kind = "an async generator" if inspect.isasyncgenfunction(func) else "a generator"
        name = getattr(func, "__qualname__", repr(func))
        raise TypeError(
            f"cannot cache {name}: it is {kind} function, whose result is a one-shot iterator; "
            "cache a function that returns a list or a tuple instead"
        )
    is_async = _is_coroutine_callable(func)
    wrapper = _make_wrapper(
        func,
        backend,
        max_size,
        ttl,
        max_key_size,
        max_value_size,
        max_bytes,
        typed,
        single_flight,
        is_async,
    )
    _copy_metadata(wrapper, func, is_async)
    _install_introspection(
        wrapper,
        backend,
        max_size,
        ttl,
        max_key_size,
        max_value_size,
        max_bytes,
        typed,
        single_flight,
    )
    return wrapper


def cache(
    func: Optional[Callable[..., Any]] = None,
    /,
    *,
    max_size: int = 128,
    ttl: Optional[float] = None,
    backend: Union[str, int, Backend] = Backend.MEMORY,
    max_key_size: int = 512,
    max_value_size: int = 4096,
    max_bytes: Optional[int] = None,
    typed: bool = False,
    single_flight: Union[bool, float] = True,
) -> Any:
    """Memoizes a function (sync or async) with SIEVE eviction.

    Use as ``@cache`` or ``@cache(max_size=..., ttl=..., backend=...)``.

    * ``max_size``: maximum number of entries (positive int, default 128);
    * ``ttl``: seconds an entry stays valid (``None``: forever; ``0``: never served);
    * ``backend``: ``"memory"`` (default) or ``"shared"`` (also ``Backend`` or 0/1);
    * ``max_key_size`` / ``max_value_size``: byte limits of the shared backend (limits, not
      reservations: an entry takes the space it needs);
    * ``max_bytes``: the most bytes of ``/dev/shm`` the shared cache's file may grow to
      (``None``: room for ``max_size`` entries at both limits, plus 1/8); when it binds, SIEVE
      evicts further entries until the new one fits. Ignored by the memory backend;
    * ``typed``: ``True`` keeps arguments of different types apart (``f(1)``, ``f(1.0)``,
      ``f(True)`` are three entries), as ``functools.lru_cache(typed=True)``. With ``False``
      (default) they share one entry: on the memory backend by ``==`` as ``lru_cache``; on the
      shared backend, whose keys are serialized bytes, ``True``/``False`` and integral floats
      are keyed as the equal int, and other types that compare equal across types
      (``Decimal(1)``, ``Fraction(1)``, or such values inside tuples) stay apart;
    * ``single_flight``: when several threads (or, on the shared backend, processes) miss
      the same key at once, one computes it and the others wait for its result, at most
      ``SINGLE_FLIGHT_WAIT_SECONDS`` (5 s) with ``True`` (default), or the given number of
      seconds, then compute it themselves; ``False``: every caller computes. If the
      computation raises, nothing is cached and a waiter retries. Async calls are always
      coalesced per event loop (awaiting costs no thread).

    Bad parameters raise ``TypeError``/``ValueError`` here, at decoration time.
    """
    checked_max_size = _check_positive_int("max_size", max_size)
    checked_ttl = _check_ttl(ttl)
    checked_backend = _resolve_backend(backend)
    checked_key_size = _check_byte_limit("max_key_size", max_key_size)
    checked_value_size = _check_byte_limit("max_value_size", max_value_size)
    checked_max_bytes = (
        None
        if max_bytes is None
        else _check_positive_int("max_bytes", max_bytes, "a positive int (bytes)")
    )
    if not isinstance(typed, bool):
        raise TypeError(f"typed must be True or False, got {typed!r}")
    checked_single_flight = _check_single_flight(single_flight)

    def decorator(target: Callable[..., Any]) -> Any:
        return _decorate(
            target,
            checked_backend,
            checked_max_size,
            checked_ttl,
            checked_key_size,
            checked_value_size,
            checked_max_bytes,
            typed,
            checked_single_flight,
        )

    if func is None:
        return decorator
    if not callable(func):
        raise TypeError(
            "cache() takes its parameters as keywords: use @cache or @cache(max_size=...), "
            f"got a positional {type(func).__name__}"
        )
    return decorator(func)
