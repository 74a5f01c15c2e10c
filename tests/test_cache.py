"""The cache and batch behind the per-process caches: expiry, the bound, invalidation
that also voids the fills of the same key under way, and one fetch per loop turn."""

from __future__ import annotations

import asyncio

import pytest

from server.cache import Batch, Expiring


def test_entries_expire_and_the_least_recently_used_goes_first():
    now = [0.0]
    cache: Expiring[str, int] = Expiring(10.0, 2, clock=lambda: now[0])
    cache.fill("a", 1, cache.version)
    cache.fill("b", 2, cache.version)
    assert cache.get("a") == 1  # "b" is now the least recently used
    cache.fill("c", 3, cache.version)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)
    now[0] = 10.0
    assert cache.get("a") is None and len(cache) == 1


def test_a_fill_that_began_before_an_invalidation_is_not_kept():
    cache: Expiring[str, int] = Expiring(10.0, 10)
    version = cache.version  # a lookup starts
    cache.drop("x")  # a revocation arrives while it is under way
    cache.fill("x", 1, version)
    assert cache.get("x") is None
    cache.fill("x", 1, cache.version)
    cache.drop_where(lambda key, value: value == 1)
    assert cache.get("x") is None


def test_only_an_invalidation_of_the_same_key_spoils_a_fill():
    cache: Expiring[str, int] = Expiring(10.0, 10)
    version = cache.version  # lookups of "x" and "y" start
    cache.drop("y")  # another member's role changes meanwhile
    cache.fill("x", 1, version)
    cache.fill("y", 2, version)
    assert (cache.get("x"), cache.get("y")) == (1, None)


def test_past_the_drops_it_remembers_every_earlier_fill_is_refused():
    cache: Expiring[str, int] = Expiring(10.0, 2)
    version = cache.version
    for key in ("a", "b", "c"):  # "a"'s drop is no longer remembered by itself
        cache.drop(key)
    cache.fill("a", 1, version)
    cache.fill("z", 2, version)  # it cannot tell "z" from "a" any more: refused too
    assert (cache.get("a"), cache.get("z")) == (None, None)
    cache.fill("z", 2, cache.version)  # a lookup that began after the drops is kept
    assert cache.get("z") == 2


def test_a_drop_by_value_or_a_clear_voids_every_fill_under_way():
    cache: Expiring[str, int] = Expiring(10.0, 10)
    version = cache.version
    cache.drop_where(lambda key, value: False)  # which lookups it concerns is unknown
    cache.fill("x", 1, version)
    assert cache.get("x") is None
    version = cache.version
    cache.clear()
    cache.fill("x", 1, version)
    assert cache.get("x") is None
    cache.fill("x", 1, cache.version)
    assert cache.get("x") == 1


async def test_loads_of_one_turn_are_one_fetch_and_share_its_failure():
    fetched: list[list[str]] = []

    async def fetch(keys: list[str]) -> dict[str, int]:
        fetched.append(sorted(keys))
        if "bad" in keys:
            raise LookupError("store down")
        return {k: len(k) for k in keys if k != "missing"}

    batch: Batch[str, int] = Batch(fetch)
    got = await asyncio.gather(batch.load("a"), batch.load("bb"), batch.load("a"),
                               batch.load("missing"))
    assert got == [1, 2, 1, None] and fetched == [["a", "bb", "missing"]]
    results = await asyncio.gather(batch.load("ok"), batch.load("bad"),
                                   return_exceptions=True)
    assert all(isinstance(r, LookupError) for r in results)
    assert await batch.load("ok") == 2  # the next turn fetches again
    with pytest.raises(LookupError):
        await batch.load("bad")
