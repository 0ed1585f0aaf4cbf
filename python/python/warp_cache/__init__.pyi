"""Type stubs of warp_cache."""

import enum
from collections.abc import Callable
from typing import Any, Final, Generic, Literal, TypeVar, final, overload

from typing_extensions import Concatenate, ParamSpec, Self

from ._info import CacheInfo as CacheInfo

_P = ParamSpec("_P")
_R = TypeVar("_R")
_S = TypeVar("_S")
_BP = ParamSpec("_BP")

__all__ = [
    "SINGLE_FLIGHT_WAIT_SECONDS",
    "Backend",
    "CacheInfo",
    "CachedFunction",
    "SharedCachedFunction",
    "cache",
]

MEMORY_MAX_SIZE_LIMIT: Final[int]
STRICT_ENV: Final[str]
SINGLE_FLIGHT_WAIT_SECONDS: Final[float]

class Backend(enum.IntEnum):
    """Where cached data lives."""

    MEMORY = 0
    SHARED = 1

@final
class CachedFunction(Generic[_P, _R]):
    """A function wrapped by ``@cache``: call it like the original."""

    __wrapped__: Callable[_P, _R]
    def __call__(self, *args: _P.args, **kwargs: _P.kwargs) -> _R: ...
    @overload
    def __get__(self, instance: None, owner: type | None = None, /) -> Self: ...
    @overload
    def __get__(
        self: CachedFunction[Concatenate[_S, _BP], _R], instance: _S, owner: type | None = None, /
    ) -> Callable[_BP, _R]: ...
    def cache_info(self) -> CacheInfo: ...
    def cache_clear(self) -> None: ...
    def cache_parameters(self) -> dict[str, Any]: ...
    # The cached value itself (for an async function: the awaited result, not an awaitable).
    def cache_peek(self, *args: _P.args, **kwargs: _P.kwargs) -> Any: ...
    def cache_invalidate(self, *args: _P.args, **kwargs: _P.kwargs) -> bool: ...
    def cache_set(self, value: Any, /, *args: _P.args, **kwargs: _P.kwargs) -> bool: ...
    def cache_refresh(self, *args: _P.args, **kwargs: _P.kwargs) -> _R: ...
    def __copy__(self) -> Self: ...
    def __deepcopy__(self, memo: Any, /) -> Self: ...

@final
class SharedCachedFunction(Generic[_P, _R]):
    """A function wrapped by ``@cache(backend="shared")``: its cache lives in shared memory,
    visible to every process that decorates the same function."""

    __wrapped__: Callable[_P, _R]
    def __call__(self, *args: _P.args, **kwargs: _P.kwargs) -> _R: ...
    @overload
    def __get__(self, instance: None, owner: type | None = None, /) -> Self: ...
    @overload
    def __get__(
        self: SharedCachedFunction[Concatenate[_S, _BP], _R],
        instance: _S,
        owner: type | None = None,
        /,
    ) -> Callable[_BP, _R]: ...
    def cache_info(self) -> CacheInfo: ...
    def cache_clear(self) -> None: ...
    def cache_parameters(self) -> dict[str, Any]: ...
    # The cached value itself (for an async function: the awaited result, not an awaitable).
    def cache_peek(self, *args: _P.args, **kwargs: _P.kwargs) -> Any: ...
    def cache_invalidate(self, *args: _P.args, **kwargs: _P.kwargs) -> bool: ...
    def cache_set(self, value: Any, /, *args: _P.args, **kwargs: _P.kwargs) -> bool: ...
    def cache_refresh(self, *args: _P.args, **kwargs: _P.kwargs) -> _R: ...
    def __copy__(self) -> Self: ...
    def __deepcopy__(self, memo: Any, /) -> Self: ...

_BackendArg = Literal["memory", "shared", 0, 1] | Backend
_SharedArg = Literal["shared", 1, Backend.SHARED]
_MemoryArg = Literal["memory", 0, Backend.MEMORY]

@overload
def cache(func: Callable[_P, _R], /) -> CachedFunction[_P, _R]: ...
@overload
def cache(
    func: None = None,
    /,
    *,
    max_size: int = 128,
    ttl: float | None = None,
    backend: _MemoryArg = ...,
    max_key_size: int = 512,
    max_value_size: int = 4096,
    max_bytes: int | None = None,
    typed: bool = False,
    single_flight: bool | float = True,
) -> Callable[[Callable[_P, _R]], CachedFunction[_P, _R]]: ...
@overload
def cache(
    func: None = None,
    /,
    *,
    max_size: int = 128,
    ttl: float | None = None,
    backend: _SharedArg,
    max_key_size: int = 512,
    max_value_size: int = 4096,
    max_bytes: int | None = None,
    typed: bool = False,
    single_flight: bool | float = True,
) -> Callable[[Callable[_P, _R]], SharedCachedFunction[_P, _R]]: ...
@overload
def cache(
    func: None = None,
    /,
    *,
    max_size: int = 128,
    ttl: float | None = None,
    backend: _BackendArg = ...,
    max_key_size: int = 512,
    max_value_size: int = 4096,
    max_bytes: int | None = None,
    typed: bool = False,
    single_flight: bool | float = True,
) -> Callable[[Callable[_P, _R]], CachedFunction[_P, _R] | SharedCachedFunction[_P, _R]]: ...
