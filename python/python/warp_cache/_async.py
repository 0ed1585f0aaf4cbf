"""Async misses of both backends: single flight per key and event loop. (The key handle is
an opaque hashable object: a stored key for the memory backend, the encoded key bytes for the
shared backend; flights are per process.)

A call of an async cached function looks its key up in Rust; a hit returns an
already-completed awaitable. A miss returns the coroutine below, which shares one
computation between every task of the same event loop that awaits the same key while it is
in flight:

* the first task (the leader) registers a future and awaits the wrapped coroutine in its own
  task, so cancellation and context variables behave as if the function were called directly;
* the others await the future through ``asyncio.shield``, so cancelling one of them never
  cancels the computation;
* if the leader is cancelled (or its coroutine is closed), the future is cancelled and the
  waiters retry: one becomes the new leader (a clean retry, nobody is stranded);
* if the computation raises, every waiter gets that exception and nothing is cached.

Futures belong to one event loop, so the table is keyed by ``(loop, key)``: several loops in
several threads each get their own flights.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable


def _current_task_is_cancelling() -> bool:
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)  # Python >= 3.11
    return bool(cancelling is not None and cancelling())


def _settle(inflight: dict[Any, Any], flight: tuple[Any, Any], future: asyncio.Future[Any]) -> None:
    if inflight.get(flight) is future:
        del inflight[flight]


async def async_miss(
    wrapper: Any,
    func: Callable[..., Any],
    inflight: dict[Any, Any],
    handle: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    loop = asyncio.get_running_loop()
    flight = (loop, handle)
    while True:
        future = inflight.get(flight)
        if future is None:
            found, value = wrapper._lookup_handle(handle)
            if found:
                return value
            break
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if future.cancelled() and not _current_task_is_cancelling():
                continue  # the leader gave up, not us: retry
            raise

    future = loop.create_future()
    inflight[flight] = future
    try:
        result = await func(*args, **kwargs)
    except BaseException as exc:
        _settle(inflight, flight, future)
        if isinstance(exc, Exception):
            try:
                future.set_exception(exc)
                future.exception()  # retrieved: no "never retrieved" warning without waiters
            except BaseException:  # pragma: no cover - exotic exception types
                future.cancel()
        else:
            future.cancel()  # cancelled or closed: the waiters retry
        raise
    try:
        wrapper._store_handle(handle, result)
    finally:
        _settle(inflight, flight, future)
        if not future.done():
            future.set_result(result)
    return result


async def refresh(cached: Any, awaitable: Any, args: tuple[Any, ...], kwargs: Any) -> Any:
    """``cache_refresh`` of an async cached function: awaits the fresh computation (started
    by the caller, outside any flight) and stores its result."""
    value = await awaitable
    cached.cache_set(value, *args, **(kwargs or {}))
    return value
