"""Checked by mypy (`make check`), never run: the stubs keep a cached function's types,
through binding to an instance too. An `assert_type` that stops holding fails the check."""

from __future__ import annotations

from typing_extensions import assert_type
from warp_cache import CachedFunction, CacheInfo, SharedCachedFunction, cache


@cache(max_size=16)
def square(x: int) -> int:
    return x * x


class Shop:
    @cache(max_size=16)
    def price(self, item: str, qty: int = 1) -> float:
        return 1.0 * qty

    @cache(max_size=16, backend="shared")
    def stock(self, item: str) -> int:
        return 3


shop = Shop()
assert_type(square(3), int)
assert_type(shop.price("tea", qty=2), float)
assert_type(shop.stock("tea"), int)
# On the class, the unbound cached function (parameter names are part of its type).
unbound_price: CachedFunction[..., float] = Shop.price
unbound_stock: SharedCachedFunction[..., int] = Shop.stock
assert_type(Shop.price(shop, "tea"), float)
assert_type(square.cache_info(), CacheInfo)
assert_type(square.cache_info().hits, int)
assert_type(square.cache_invalidate(3), bool)
assert_type(square.cache_set(9, 3), bool)
assert_type(square.cache_refresh(3), int)
hits, misses, max_size, current_size = square.cache_info()
assert_type(hits, int)
