"""Tombstone collection on real replicas: deleted keys stop costing memory and disk, and
nothing a client relies on changes (absent stays absent, live keys stay, creates work)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from quorumkv.client import Client
from quorumkv.storage.log import LOG_NAME, replay
from replicas import Replicas, running

pytestmark = pytest.mark.integration

TTL = 0.5  # seconds; collection rounds run every TTL/2


@pytest.fixture
def collecting(tmp_path: Path) -> Iterator[Replicas]:
    with running(tmp_path, env={"QUORUMKV_TOMBSTONE_TTL": str(TTL)}) as replicas:
        yield replicas


async def key_counts(replicas: Replicas, nodes: list[str] | None = None) -> dict[str, int]:
    """Keys held (tombstones included) by each of `nodes`, default every replica."""
    counts = {}
    for node in nodes or list(replicas.urls):
        async with Client(replicas.urls[node]) as client:
            counts[node] = (await client.cluster())["keys"]
    return counts


async def wait_key_counts(replicas: Replicas, expected: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while set((counts := await key_counts(replicas)).values()) != {expected}:
        assert time.monotonic() < deadline, counts
        await asyncio.sleep(0.2)


def stored_keys(replicas: Replicas, node: str) -> int:
    """How many keys a restart of the (stopped) replica would load from its log."""
    return len(replay(replicas.data_dir(node) / LOG_NAME).states)


async def metric(url: str, name: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as resp:
        text = await resp.text()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(name + " ") or line.startswith(name + "{"))


async def test_deleted_keys_are_forgotten_by_every_replica(collecting: Replicas) -> None:
    urls = list(collecting.urls.values())
    async with Client(urls[0]) as a, Client(urls[1]) as b:
        for i in range(20):
            await a.put(f"key-{i}", b"v")
        for i in range(0, 20, 2):
            assert await b.delete(f"key-{i}")
        await wait_key_counts(collecting, 10)
        collected = sum([await metric(url, "quorumkv_tombstones_collected_total")
                         for url in urls])
        assert collected == 10
        for url in urls:
            assert await metric(url, "quorumkv_tombstones") == 0
        for i in range(20):
            got = await a.get(f"key-{i}")
            assert (got is None) == (i % 2 == 0), i
        recreated = await b.put("key-0", b"again", create_only=True)
        assert recreated.created
        got = await a.get("key-0")
        assert got is not None and got.value == b"again" and got.etag == recreated.etag

    collecting.stop_all()  # what is forgotten stays forgotten: keys gone, floor durable
    assert [stored_keys(collecting, node) for node in collecting.urls] == [11, 11, 11]
    collecting.start_all()
    async with Client(urls[2]) as c:
        assert await c.get("key-2") is None
        assert (await c.get("key-1")).value == b"v"  # type: ignore[union-attr]
        assert (await c.put("key-2", b"new", create_only=True)).created
        assert (await c.get("key-0")).value == b"again"  # type: ignore[union-attr]


async def test_nothing_is_collected_while_a_replica_is_paused(collecting: Replicas) -> None:
    """Every voter must hold a tombstone before any forgets it: a paused replica might hold
    the value from before the delete."""
    async with Client(collecting.urls["0"]) as a:
        await a.put("paused-1", b"v")
        await a.put("paused-2", b"v")
        await wait_key_counts(collecting, 2)
        collecting.pause("2")
        try:
            assert await a.delete("paused-1")
            await asyncio.sleep(8 * TTL)  # several rounds
            counts = await key_counts(collecting, ["0", "1"])
            assert counts == {"0": 2, "1": 2}
        finally:
            collecting.resume("2")
        await wait_key_counts(collecting, 1)
        assert await a.get("paused-1") is None
        assert (await a.get("paused-2")).value == b"v"  # type: ignore[union-attr]


async def test_create_delete_churn_keeps_memory_flat(collecting: Replicas) -> None:
    """The workload tombstones used to leak on: short-lived keys (locks, sessions).

    Every create succeeds: one whose fast vote a voter refused because a purge had just raised
    its floor is settled by a classic round (seen in CI as a `503` before settling)."""
    async with Client(collecting.urls["1"]) as client:
        for i in range(300):
            assert (await client.put(f"session-{i}", b"x", create_only=True)).created
            assert await client.delete(f"session-{i}")
        await wait_key_counts(collecting, 0, timeout=30)
        for i in range(0, 300, 30):
            assert await client.get(f"session-{i}") is None
