"""Anti-entropy on real replicas: differences that last are repaired, writes still on their
way to the last replica are left alone (repairing them raced the client's own write)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from quorumkv.client import Client
from replicas import Replicas, running
from test_tombstones import metric

pytestmark = pytest.mark.integration


@pytest.fixture
def comparing(tmp_path: Path) -> Iterator[Replicas]:
    """Three replicas comparing digests with a peer every 0.2 s instead of every 10 s."""
    with running(tmp_path, env={"QUORUMKV_ANTIENTROPY_INTERVAL": "0.2"}) as replicas:
        yield replicas


def comparisons(replicas: Replicas) -> list[dict[str, object]]:
    """Every "anti-entropy compared keys" log record of every replica."""
    records = []
    for node in replicas.urls:
        for line in replicas.log(node).splitlines():
            if '"anti-entropy compared keys"' in line:
                records.append(json.loads(line))
    return records


async def test_writes_in_flight_are_not_repaired(comparing: Replicas) -> None:
    urls = list(comparing.urls.values())
    clients = [Client(url, timeout=10) for url in urls]
    stop = asyncio.Event()
    written = 0

    async def writer(i: int) -> None:
        nonlocal written
        n = 0
        while not stop.is_set():
            await clients[i % len(clients)].put(f"busy-{(i * 7 + n) % 40}", f"{i}.{n}".encode())
            written += 1
            n += 1

    writers = [asyncio.create_task(writer(i)) for i in range(12)]
    try:
        # write until some comparison caught writes on their way (and then a little longer)
        deadline = time.monotonic() + 30
        while not any(int(str(r["differing"])) for r in comparisons(comparing)):
            assert time.monotonic() < deadline, "no comparison ever saw a write in flight"
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.5)
    finally:
        stop.set()
        await asyncio.gather(*writers)
        for client in clients:
            await client.close()
    records = comparisons(comparing)
    assert written > 100
    assert [r for r in records if r["lasting"] != 0] == []
    assert sum([await metric(url, "quorumkv_antientropy_repairs_total") for url in urls]) == 0


async def test_a_replica_that_missed_writes_is_repaired(comparing: Replicas) -> None:
    urls = comparing.urls
    comparing.kill("2")
    async with Client(urls["0"]) as client:
        for i in range(30):
            await client.put(f"missed-{i}", b"v")
    comparing.start("2")
    comparing.wait_ready(["2"])
    deadline = time.monotonic() + 15
    async with Client(urls["2"]) as client:
        while (await client.cluster())["keys"] < 30:
            assert time.monotonic() < deadline, "replica 2 was not repaired"
            await asyncio.sleep(0.2)
    assert await metric(urls["2"], "quorumkv_antientropy_repairs_total") \
        + await metric(urls["0"], "quorumkv_antientropy_repairs_total") \
        + await metric(urls["1"], "quorumkv_antientropy_repairs_total") >= 30
    assert any(r["lasting"] for r in comparisons(comparing))


async def test_many_missed_writes_are_repaired_about_once_each(comparing: Replicas) -> None:
    """The restarted replica and both peers find the same differences at once (the peers
    compare every 0.2 s here): the work is shared, not done by each of them."""
    urls = comparing.urls
    comparing.kill("2")
    count = 3000
    async with Client(urls["0"], timeout=10) as client:
        slots = asyncio.Semaphore(32)

        async def put(i: int) -> None:
            async with slots:
                await client.put(f"missed-{i:05d}", b"v" * 64)

        await asyncio.gather(*(put(i) for i in range(count)))
    comparing.start("2")
    comparing.wait_ready(["2"], timeout=60)
    deadline = time.monotonic() + 60
    repairs, settled = -1.0, 0
    while settled < 3:  # until no replica has repaired anything for three looks
        assert time.monotonic() < deadline, "the repairs did not settle"
        await asyncio.sleep(0.5)
        total = sum([await metric(url, "quorumkv_antientropy_repairs_total")
                     for url in urls.values()])
        settled, repairs = (settled + 1 if total == repairs else 0), total
    async with Client(urls["2"]) as client:
        assert (await client.cluster())["keys"] == count
    assert count <= repairs <= 1.25 * count  # before sharing: 2-3 repairs per key
