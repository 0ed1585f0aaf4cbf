"""Hit-rate cross-check from Python: a Zipf key sequence replayed through a decorated function
must give exactly the misses of a plain list-based SIEVE written here (catches wrapper bugs:
keys, counting, eviction order)."""

from __future__ import annotations

import random

import pytest

from warp_cache import cache


class ReferenceSieve:
    """SIEVE (NSDI'24, Algorithm 1) over a plain list: index 0 is the head (newest)."""

    def __init__(self, capacity):
        self.capacity = capacity
        self.keys = []
        self.visited = []
        self.hand = None  # index into the lists, or None: start from the tail

    def access(self, key):
        """Returns True on a hit; on a miss inserts the key (evicting first when full)."""
        try:
            index = self.keys.index(key)
        except ValueError:
            index = None
        if index is not None:
            self.visited[index] = True
            return True
        if len(self.keys) == self.capacity:
            self._evict()
        self.keys.insert(0, key)
        self.visited.insert(0, False)
        if self.hand is not None:
            self.hand += 1
        return False

    def _evict(self):
        tail = len(self.keys) - 1
        o = tail if self.hand is None else self.hand
        while self.visited[o]:
            self.visited[o] = False
            o = tail if o == 0 else o - 1
        # The hand rests on the victim's predecessor (towards the head).
        self.hand = o - 1 if o > 0 else None
        del self.keys[o]
        del self.visited[o]
        return o


def zipf_keys(n_keys, n_requests, alpha, seed):
    rng = random.Random(seed)
    weights = [1.0 / (rank**alpha) for rank in range(1, n_keys + 1)]
    population = list(range(n_keys))
    rng.shuffle(population)
    return rng.choices(population, weights=weights, k=n_requests)


def test_reference_sieve_paper_example():
    ref = ReferenceSieve(3)
    for k in "ABC":
        assert not ref.access(k)
    assert ref.access("A")
    assert not ref.access("D")  # evicts B
    assert ref.keys == ["D", "C", "A"]
    assert not ref.access("E")  # evicts C (the hand rested on it)
    assert ref.keys == ["E", "D", "A"]


@pytest.mark.parametrize(
    "capacity, n_keys, alpha, seed, wrap",
    [
        (10, 1000, 1.0, 1, "int"),
        (50, 1000, 0.8, 2, "int"),
        (100, 2000, 1.2, 3, "str"),
        (1, 50, 1.0, 4, "int"),
        (64, 500, 0.9, 5, "tuple"),
        (37, 800, 1.1, 6, "kw"),
    ],
)
def test_zipf_misses_equal_the_reference_sieve(capacity, n_keys, alpha, seed, wrap):
    sequence = zipf_keys(n_keys, 20_000, alpha, seed)
    computed = []

    @cache(max_size=capacity)
    def f(*args, **kwargs):
        computed.append((args, tuple(sorted(kwargs.items()))))
        return args, kwargs

    ref = ReferenceSieve(capacity)
    ref_misses = 0
    for k in sequence:
        if wrap == "int":
            f(k)
            ref_key = k
        elif wrap == "str":
            f(f"key-{k}")
            ref_key = k
        elif wrap == "tuple":
            f(k, k % 3)
            ref_key = k
        else:
            f(k, flag=k % 2)
            ref_key = k
        ref_misses += not ref.access(ref_key)
    info = f.cache_info()
    assert info.misses == ref_misses
    assert len(computed) == ref_misses
    assert info.hits + info.misses == len(sequence)
    assert info.current_size == min(capacity, len(set(sequence)))
    # Exactly the same entries survive.
    survivors = set()
    for k in ref.keys:
        before = len(computed)
        if wrap == "int":
            f(k)
        elif wrap == "str":
            f(f"key-{k}")
        elif wrap == "tuple":
            f(k, k % 3)
        else:
            f(k, flag=k % 2)
        if len(computed) == before:
            survivors.add(k)
    assert survivors == set(ref.keys)


def test_scan_resistance_matches_the_reference():
    """A hot set plus a one-time scan: SIEVE keeps the hot set (and the wrapper agrees)."""
    hot = list(range(20))
    sequence = hot * 5 + list(range(1000, 1500)) + hot * 5
    calls = []

    @cache(max_size=40)
    def f(x):
        calls.append(x)
        return x

    ref = ReferenceSieve(40)
    ref_misses = sum(not ref.access(k) for k in sequence)
    for k in sequence:
        f(k)
    assert len(calls) == ref_misses
    assert set(calls[-20:]).isdisjoint(hot), "the hot set survived the scan"
