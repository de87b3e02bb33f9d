"""Real replica processes on loopback: the API's semantics, and survival of real faults."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import aiohttp
import pytest
from quorumkv.client import (
    Client,
    GetResult,
    NotModified,
    PreconditionFailed,
    PutResult,
    QuorumKVError,
    Unavailable,
)
from quorumkv.core.acceptor import Promise
from quorumkv.core.ballot import Ballot
from quorumkv.core.changes import Put
from quorumkv.core.messages import Prepare, Read, Unchanged
from quorumkv.core.quorum import Config, make_config
from quorumkv.errors import NotFound, QuorumUnavailable
from quorumkv.http import relay
from quorumkv.node import EXIT_STORAGE_FAILED, STORAGE_STALL_SECONDS, Node, replica_session
from quorumkv.placement import home_of, home_order
from quorumkv.replication import stream as stream_module
from quorumkv.replication import wire
from quorumkv.replication.coordinator import SETTLE
from quorumkv.replication.stream import PeerStream, StreamBroken
from quorumkv.replication.wire import pack_frame, unpack_frame
from replicas import Replicas
from test_tombstones import metric
from yarl import URL

pytestmark = pytest.mark.integration


async def test_crud_and_compare_and_set_through_different_replicas(cluster: Replicas) -> None:
    a, b, c = (Client(url, timeout=5) for url in cluster.urls.values())
    try:
        created = await a.put("user/1 ünïcode", b"\x00\xffbinary")
        assert created.created
        got = await b.get("user/1 ünïcode")
        assert got is not None and got.value == b"\x00\xffbinary" and got.etag == created.etag
        replaced = await c.put("user/1 ünïcode", b"v2")
        assert not replaced.created and replaced.etag != created.etag
        with pytest.raises(PreconditionFailed):
            await a.put("user/1 ünïcode", b"stale", if_match=created.etag)
        cas = await b.put("user/1 ünïcode", b"v3", if_match=replaced.etag)
        assert (await c.get("user/1 ünïcode")).value == b"v3"  # type: ignore[union-attr]
        with pytest.raises(PreconditionFailed):
            await a.put("user/1 ünïcode", b"again", create_only=True)
        with pytest.raises(PreconditionFailed):
            await a.delete("user/1 ünïcode", if_match=replaced.etag)
        assert await b.delete("user/1 ünïcode", if_match=cas.etag)
        assert await c.get("user/1 ünïcode") is None
        assert not await a.delete("user/1 ünïcode")
        recreated = await a.put("user/1 ünïcode", b"new", create_only=True)
        assert recreated.created
    finally:
        for client in (a, b, c):
            await client.close()


async def test_a_conditional_get_answers_304_while_the_client_holds_the_current_version(
        cluster: Replicas) -> None:
    """A client that holds a value asks for it only if it changed (RFC 9110, 13.1)."""
    a, b = cluster.urls["1"], cluster.urls["2"]
    async with aiohttp.ClientSession() as session:
        async def get(url: str, **headers: str) -> tuple[int, str | None, bytes]:
            async with session.get(url + "/v1/kv/cond", headers=headers) as resp:
                return resp.status, resp.headers.get("ETag"), await resp.read()

        async with session.put(a + "/v1/kv/cond", data=b"v1") as resp:
            assert resp.status == 201
            first = resp.headers["ETag"]
        assert await get(b, **{"If-None-Match": first}) == (304, first, b"")
        assert await get(b, **{"If-None-Match": f'"other", W/{first}'}) == (304, first, b"")
        assert await get(a, **{"If-Match": first}) == (200, first, b"v1")
        async with session.put(a + "/v1/kv/cond", data=b"v2") as resp:
            second = resp.headers["ETag"]
        assert await get(b, **{"If-None-Match": first}) == (200, second, b"v2")
        assert (await get(b, **{"If-Match": first}))[0] == 412  # it changed since
        async with session.delete(a + "/v1/kv/cond") as resp:
            assert resp.status == 204
        assert (await get(b, **{"If-Match": "*"}))[0] == 412  # nothing to match
        assert (await get(b, **{"If-None-Match": second}))[0] == 404


async def test_the_client_refreshes_a_value_it_holds_only_when_it_changed(
        cluster: Replicas) -> None:
    """`get_if_changed` (If-None-Match) and `get(if_match=...)` of the Python client."""
    async with Client(cluster.urls["0"]) as writer, Client(cluster.urls["2"]) as reader:
        first = await writer.put("held", b"v1")
        assert await reader.get_if_changed("held", first.etag) == NotModified(first.etag)
        assert await reader.get("held", if_match=first.etag) == GetResult(b"v1", first.etag)
        second = await writer.put("held", b"v2")
        assert await reader.get_if_changed("held", first.etag) == GetResult(b"v2", second.etag)
        with pytest.raises(PreconditionFailed):
            await reader.get("held", if_match=first.etag)
        await writer.delete("held")
        assert await reader.get_if_changed("held", second.etag) is None
        with pytest.raises(PreconditionFailed):  # nothing to match
            await reader.get("held", if_match=second.etag)


async def test_creates_of_absent_keys_take_one_round_and_read_back_everywhere(
    cluster: Replicas,
) -> None:
    """Fast creates: on a healthy cluster creates of fresh keys are done in their fast round;
    the home reads a key back in one round trip (it knows the vote is chosen), and so does
    every other replica (it hears every voter hold the vote), with the same value and
    version; a second create is refused."""
    urls = list(cluster.urls.values())
    clients = {node: Client(url, timeout=5) for node, url in cluster.urls.items()}
    paths = 'quorumkv_paxos_paths_total{path="%s"}'
    keys = [f"fresh/{i}" for i in range(30)]
    try:
        created = [await clients[str(i % 3)].put(key, key.encode(), create_only=True)
                   for i, key in enumerate(keys)]
        assert all(put.created for put in created)
        # every one, unless a heartbeat or a loop tick came late on a loaded machine (the
        # home then takes the prepare, as it should)
        fast = sum([await metric(url, paths % "fast_create") for url in urls])
        assert len(keys) * 2 // 3 <= fast <= len(keys)
        home = clients[home_of(cluster.urls)]
        for key, put in zip(keys, created, strict=True):
            got = await home.get(key)
            assert got is not None and got.value == key.encode() and got.etag == put.etag
        assert sum([await metric(url, paths % "slow_read") for url in urls]) == 0
        for client in clients.values():
            for key, put in zip(keys, created, strict=True):
                got = await client.get(key)
                assert got is not None and got.value == key.encode() and got.etag == put.etag
        # none written back (one would be, per key, if reads trusted only the home's word),
        # unless a voter's reply came over READ_PATIENCE late on a loaded machine
        assert sum([await metric(url, paths % "slow_read") for url in urls]) <= len(keys) // 6
        with pytest.raises(PreconditionFailed):
            await clients["1"].put(keys[0], b"again", create_only=True)
    finally:
        for client in clients.values():
            await client.close()


async def test_fast_creates_complete_while_a_voter_freezes_unnoticed(cluster: Replicas) -> None:
    """Creates that take the fast round (every voter must take it) just as a voter freezes,
    before anything marks it down: a classic round settles each without it, so they succeed
    in a fraction of their timeout instead of answering 503 at its end."""
    paths = 'quorumkv_paxos_paths_total{path="%s"}'
    assert home_of(cluster.urls) == "0"
    keys = [f"frozen-voter/{i}" for i in range(20)]
    async with Client(cluster.urls["0"], timeout=10) as home:
        await home.put("warm-up", b"v")  # the home has heard from every voter
        fast_before = await metric(cluster.urls["0"], paths % "fast_create")
        cluster.pause("2")
        try:
            started = time.monotonic()
            results = await asyncio.gather(*(home.put(key, b"new", create_only=True)
                                             for key in keys), return_exceptions=True)
            took = time.monotonic() - started
        finally:
            cluster.resume("2")
        assert [r for r in results if isinstance(r, BaseException)] == []
        assert await metric(cluster.urls["0"], paths % "fast_create") > fast_before
        assert took < cluster.request_timeout, took


async def test_a_fresh_create_reads_back_while_a_voter_of_it_is_paused(
    cluster: Replicas,
) -> None:
    """A read waits only briefly for the last voter of a fast vote: with that voter frozen,
    it writes the value back through the others and answers it."""
    paths = 'quorumkv_paxos_paths_total{path="%s"}'
    assert home_of(cluster.urls) == "0"
    keys = [f"paused-voter/{i}" for i in range(5)]
    async with Client(cluster.urls["0"], timeout=5) as home, \
            Client(cluster.urls["1"], timeout=5) as reader:
        for key in keys[:5]:  # a late loop tick makes the home take the prepare path instead
            fast_before = await metric(cluster.urls["0"], paths % "fast_create")
            created = await home.put(key, b"fresh", create_only=True)
            if await metric(cluster.urls["0"], paths % "fast_create") > fast_before:
                break
        else:
            raise AssertionError("no create took its fast round")
        slow_before = await metric(cluster.urls["1"], paths % "slow_read")
        cluster.pause("2")
        try:
            got = await reader.get(key)
        finally:
            cluster.resume("2")
        assert got is not None and got.value == b"fresh" and got.etag == created.etag
        assert await metric(cluster.urls["1"], paths % "slow_read") == slow_before + 1


async def test_reads_do_not_change_the_version(cluster: Replicas) -> None:
    async with Client(cluster.urls["0"]) as a, Client(cluster.urls["2"]) as c:
        put = await a.put("k", b"v")
        for _ in range(5):
            got = await c.get("k")
            assert got is not None and got.etag == put.etag


async def test_refused_changes_of_absent_keys_leave_nothing_behind(cluster: Replicas) -> None:
    """A delete of an absent key, or a compare-and-set of one, is answered from a read: it
    changes nothing, so it stores nothing (before: every one left a promise for good, so
    clients could grow every replica's storage without end)."""
    urls = list(cluster.urls.values())
    for i, url in enumerate(urls):
        async with Client(url) as client:
            for n in range(20):
                assert not await client.delete(f"gone-{i}-{n}")
                with pytest.raises(PreconditionFailed):
                    await client.put(f"cond-{i}-{n}", b"v", if_match='"1.1.1"')
                with pytest.raises(PreconditionFailed):
                    await client.delete(f"cond-{i}-{n}", if_match='"1.1.1"')
    for url in urls:
        async with Client(url) as client:
            assert (await client.cluster())["keys"] == 0
    async with Client(urls[0]) as client:  # and the changes that do apply still do
        created = await client.put("k", b"1")
        assert (await client.put("k", b"2", if_match=created.etag)).created is False
        assert await client.delete("k", if_match=(await client.get("k")).etag)  # type: ignore[union-attr]
        assert await client.get("k") is None


async def test_malformed_requests_get_4xx_and_change_nothing(cluster: Replicas) -> None:
    url = cluster.urls["1"]
    async with aiohttp.ClientSession() as http:
        async def status(method: str, path: str, **kw: object) -> tuple[int, dict[str, str]]:
            target = URL(url + path, encoded=True)  # send the path bytes exactly as written
            async with http.request(method, target, **kw) as resp:  # type: ignore[arg-type]
                body = await resp.json(content_type=None) if resp.status >= 400 else {}
                return resp.status, body

        assert (await status("GET", "/v1/kv/bad%zz"))[0] == 400
        assert (await status("GET", "/v1/kv/%FF%FE"))[0] == 400
        assert (await status("GET", "/v1/kv/" + "k" * 1025))[0] == 400
        code, body = await status("PUT", "/v1/kv/big", data=io.BytesIO(b"x" * (1024 * 1024 + 1)))
        assert code == 413 and body["error"] == "value_too_large"
        code, body = await status("PUT", "/v1/kv/x", data=b"v", headers={"If-None-Match": '"a"'})
        assert code == 400 and "If-None-Match" in body["detail"]
        assert (await status("POST", "/v1/kv/x"))[0] == 405
        code, _ = await status("POST", "/internal/v1/batch", data=b"\xc1garbage")
        assert code == 400
        assert (await status("GET", "/v1/kv/big"))[0] == 404
        assert (await status("GET", "/v1/kv/x"))[0] == 404
    for node in cluster.urls:
        assert cluster.status(node, "/healthz") == 200


async def test_peer_stream_answers_frames_and_survives_garbage(cluster: Replicas) -> None:
    """The replicas' own transport: a frame is answered like the same POST; a malformed frame
    closes that stream only, and the replica goes on serving."""
    stream = cluster.urls["1"] + "/internal/v1/stream"
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(stream) as ws:
            await ws.send_bytes(pack_frame(7, 0, b"\xc1garbage"))
            request_id, status, body = unpack_frame(await ws.receive_bytes(timeout=5))
            assert (request_id, status) == (7, 400) and b"malformed peer batch" in body
            await ws.send_bytes(b"short")
            assert (await ws.receive(timeout=5)).type is aiohttp.WSMsgType.CLOSE
        async with http.ws_connect(stream) as ws:
            await ws.send_str("text")
            assert (await ws.receive(timeout=5)).type is aiohttp.WSMsgType.CLOSE
    async with Client(cluster.urls["0"]) as client:
        await client.put("after-garbage", b"v")
    async with Client(cluster.urls["1"]) as client:
        assert (await client.get("after-garbage")).value == b"v"  # type: ignore[union-attr]


async def test_a_read_naming_the_known_ballot_is_answered_unchanged(cluster: Replicas) -> None:
    """Digest reads: a peer holding the ballot the reader already has does not send the
    register back; holding another, it sends it in full."""
    async with Client(cluster.urls["0"]) as client:
        await client.put("digest", b"v" * 100)
        info, membership = await client.cluster(), await client.membership()
    config = Config.from_json(membership["config"])
    incarnation = next(m["incarnation"] for m in info["members"] if m["id"] == "0")

    async def ask(*reads: Read) -> list[object]:
        body = wire.pack_envelope("0", incarnation, config, list(reads))
        async with aiohttp.ClientSession() as http, \
                http.post(cluster.urls["1"] + "/internal/v1/batch", data=body) as resp:
            assert resp.status == 200
            return list(wire.unpack_replies(await resp.read())[1])

    deadline = time.monotonic() + 5
    while True:  # replica 1 may not be in the write's quorum: its accept can trail the answer
        [full] = await ask(Read("digest"))
        assert isinstance(full, Promise)
        if full.register.exists:
            break
        assert time.monotonic() < deadline, "replica 1 never took the write"
        await asyncio.sleep(0.05)
    assert await ask(Read("digest", full.accepted), Read("digest", Ballot(1, "x", 1))) == [
        Unchanged(), full]


async def test_a_peer_stream_reconnects_and_closes_when_idle(
    cluster: Replicas, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream_module, "IDLE_CLOSE", 0.3)
    async with aiohttp.ClientSession() as http:
        peer = PeerStream(cluster.urls["2"], http, {}, max_frame=1 << 20)
        status, _ = await peer.request(b"\xc1not a batch", timeout=5)
        assert status == 400 and peer.connected
        deadline = time.monotonic() + 5
        while peer.connected:  # nobody uses it: it closes itself
            assert time.monotonic() < deadline, "an idle stream stayed open"
            await asyncio.sleep(0.1)
        status, _ = await peer.request(b"\xc1not a batch", timeout=5)  # and opens again
        assert status == 400 and peer.connected
        cluster.kill("2")
        with pytest.raises(StreamBroken):  # on the dead stream, or refused if already noticed
            await peer.request(b"\xc1not a batch", timeout=5)
        with pytest.raises(StreamBroken) as refused:
            await peer.request(b"\xc1not a batch", timeout=5)
        assert not refused.value.sent  # nobody listens: it certainly never left
        await peer.close()


async def test_health_metrics_and_cluster_view(cluster: Replicas) -> None:
    async with Client(cluster.urls["0"]) as client:
        await client.put("m", b"1")
        deadline = time.monotonic() + 5
        info = await client.cluster()
        while not all(m["reachable"] for m in info["members"]):
            assert time.monotonic() < deadline, info
            await asyncio.sleep(0.1)
            info = await client.cluster()
    assert info["node_id"] == "0" and info["quorum"] == 2 and info["ready"] is True
    assert {m["id"] for m in info["members"]} == {"0", "1", "2"}
    assert all(m["synced"] for m in info["members"])  # the fixture waited for it
    async with aiohttp.ClientSession() as http:
        # refusals count too: a key too long (the lean path, then aiohttp's), a value over
        # the limit, a precondition on DELETE that is not supported
        for method, path, headers, body in (
                ("GET", "/v1/kv/" + "k" * 1025, {}, None),
                ("GET", "/v1/kv/" + "k" * 1025, {"Content-Encoding": "identity"}, None),
                ("PUT", "/v1/kv/big", {}, io.BytesIO(b"x" * (2 << 20))),
                ("DELETE", "/v1/kv/m", {"If-None-Match": "*"}, None)):
            async with http.request(method, cluster.urls["0"] + path, headers=headers,
                                    data=body) as resp:
                assert resp.status in (400, 413), (method, path, resp.status)
        async with http.get(cluster.urls["0"] + "/metrics") as resp:
            text = await resp.text()
    assert 'quorumkv_requests_total{op="put",outcome="201"} 1.0' in text
    assert 'quorumkv_requests_total{op="get",outcome="400"} 2.0' in text
    assert 'quorumkv_requests_total{op="put",outcome="413"} 1.0' in text
    assert 'quorumkv_requests_total{op="delete",outcome="400"} 1.0' in text
    assert 'quorumkv_request_duration_seconds_count{op="put"} 2.0' in text
    for name in ("quorumkv_requests_total", "quorumkv_request_duration_seconds",
                 "quorumkv_peer_reachable", "quorumkv_commit_duration_seconds",
                 "quorumkv_peer_batch_messages", "quorumkv_quorum_failures"):
        assert name in text


async def write_many(url: str, prefix: str, count: int) -> dict[str, bytes]:
    """Acknowledged writes only: what a client was told succeeded."""
    acked = {}
    async with Client(url, timeout=5) as client:
        for i in range(count):
            key, value = f"{prefix}{i}", f"value-{i}".encode()
            try:
                await client.put(key, value)
            except Unavailable:
                continue
            acked[key] = value
    return acked


async def assert_readable(url: str, acked: dict[str, bytes]) -> None:
    async with Client(url, timeout=5) as client:
        for key, value in acked.items():
            got = await client.get(key)
            assert got is not None and got.value == value, key


async def test_kill_one_replica_writes_continue_nothing_lost(cluster: Replicas) -> None:
    writer = asyncio.create_task(write_many(cluster.urls["0"], "kill-", 300))
    await asyncio.sleep(0.3)
    cluster.kill("2")
    acked = await writer
    assert len(acked) >= 290  # at most the writes in flight at the kill may be indeterminate
    cluster.start("2")
    cluster.wait_ready(["2"])
    await assert_readable(cluster.urls["2"], acked)
    # anti-entropy brings the restarted replica's own copy up to date, not just quorum reads
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        async with Client(cluster.urls["2"]) as client:
            if (await client.cluster())["keys"] >= len(acked):
                break
        await asyncio.sleep(0.5)
    else:
        raise AssertionError("replica 2 did not catch up by anti-entropy")


async def test_writes_go_on_after_one_replica_restarted_and_another_died(
    cluster: Replicas,
) -> None:
    """A restarted replica refuses every ballot below its new floor. With a second voter
    then down, the third is home of the keys of both and must prepare above that floor:
    before, each write of its keys met one refusal and one failure and answered 503, for as
    long as the second stayed down (about half of all keys, found by exploratory testing)."""
    keys = [f"restart-{i}" for i in range(30)]
    async with Client(cluster.urls["2"], timeout=5) as client:
        for key in keys:
            await client.put(key, b"before")
    cluster.kill("0")
    cluster.start("0")
    cluster.wait_ready(["0"])
    cluster.kill("1")
    await wait_until_unreachable(cluster.urls["2"], "1")
    for url in (cluster.urls["2"], cluster.urls["0"]):
        async with Client(url, timeout=5) as client:
            for key in keys:
                assert not (await client.put(key, url.encode())).created
            for key in keys:
                assert (await client.get(key)).value == url.encode()  # type: ignore[union-attr]


def fsync_child_of(pid: int) -> int:
    """The pid of replica process `pid`'s fsync child."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"fsync_child" in cmdline:
                return int(entry.name)
    raise AssertionError(f"replica {pid} has no fsync child")


async def test_a_replica_whose_storage_fails_exits_and_comes_back_whole(
    cluster: Replicas,
) -> None:
    """Without its fsync process a replica cannot make anything durable: it must stop (a
    restart replays its log), not go on answering from memory; the others carry on."""
    before = await write_many(cluster.urls["0"], "before-", 30)
    replica = cluster.procs["2"]
    os.kill(fsync_child_of(replica.pid), signal.SIGKILL)
    acked = await write_many(cluster.urls["0"], "after-", 60)  # replica 2 votes on some
    assert replica.wait(timeout=10) == EXIT_STORAGE_FAILED
    assert "storage failed" in cluster.log("2")
    assert len(acked) >= 55  # only those in flight when it stopped may be indeterminate
    del cluster.procs["2"]
    cluster.start("2")
    cluster.wait_ready(["2"])
    await assert_readable(cluster.urls["2"], {**before, **acked})


async def test_a_replica_whose_disk_stops_answering_is_not_ready_until_it_answers(
    cluster: Replicas,
) -> None:
    """A hung disk (here its fsync process, stopped) fails no call, so nothing but readiness
    can show it: the replica's votes wait on it, and a Service should stop sending it
    clients. The others carry on, and it is ready again once the disk answers."""
    child = fsync_child_of(cluster.procs["2"].pid)
    os.kill(child, signal.SIGSTOP)
    try:
        acked = await write_many(cluster.urls["0"], "stall-", 30)  # reaches replica 2 too
        assert len(acked) == 30
        deadline = time.monotonic() + STORAGE_STALL_SECONDS + 5
        async with aiohttp.ClientSession() as session:
            while True:
                async with session.get(cluster.urls["2"] + "/readyz") as resp:
                    body = await resp.text()
                    if resp.status == 503:
                        break
                assert time.monotonic() < deadline, f"still ready: {body}"
                await asyncio.sleep(0.2)
        assert "storage stalled" in body
        while not any("readiness changed" in line and "storage stalled" in line
                      for line in cluster.log("2").splitlines()):  # logged within a tick
            assert time.monotonic() < deadline + 2, "the change of readiness was not logged"
            await asyncio.sleep(0.1)
    finally:
        os.kill(child, signal.SIGCONT)
    cluster.wait_ready(["2"])
    await assert_readable(cluster.urls["2"], acked)


async def test_paused_replica_does_not_block_a_majority(cluster: Replicas) -> None:
    cluster.pause("1")
    try:
        # Writes of keys whose home is the paused replica fail (503) until it is noticed
        # (heartbeats: well under a second); from then on nothing waits on it.
        await wait_until_unreachable(cluster.urls["0"], "1")
        acked = await write_many(cluster.urls["0"], "pause-", 100)
        assert len(acked) == 100
        await assert_readable(cluster.urls["2"], acked)
    finally:
        cluster.resume("1")
    await assert_readable(cluster.urls["1"], acked)


@pytest.mark.parametrize("stream_open", [True, False], ids=["stream-open", "no-stream-yet"])
async def test_writes_waiting_on_a_home_that_stops_are_released_when_it_is_noticed(
    cluster: Replicas, stream_open: bool,
) -> None:
    """Writes forwarded to a home that is then paused do not wait out their timeout: once a
    heartbeat finds the home silent, those still queued for it are proposed here (and
    succeed), a batch already sent answers 503 (it may still take effect). With no stream
    to the home yet, the handshake's own timeout releases the first batch, as never sent."""
    assert home_of(cluster.urls) == "0"
    keys = [f"homed-{i}" for i in range(41)]
    outcomes: list[tuple[float, float, str]] = []  # (started, seconds, outcome)
    async with Client(cluster.urls["1"], timeout=10) as client:
        if stream_open:
            await client.put(keys.pop(), b"v")  # forwarded: opens 1's stream to the home 0

        async def write(key: str, delay: float) -> None:
            await asyncio.sleep(delay)
            started = time.monotonic()
            try:
                await client.put(key, b"v")
                outcome = "ok"
            except Unavailable:
                outcome = "503"
            outcomes.append((started - paused_at, time.monotonic() - started, outcome))

        cluster.pause("0")
        paused_at = time.monotonic()
        try:
            await asyncio.gather(*(write(key, 0.01 * i) for i, key in enumerate(keys)))
        finally:
            cluster.resume("0")
    slowest = max(seconds for _, seconds, _ in outcomes)
    assert slowest < cluster.request_timeout, outcomes  # before: timeout + grace (3.5 s)
    early = [outcome for started, _, outcome in outcomes if started < 0.3]
    assert "ok" in early, outcomes  # queued behind the stuck batch, then proposed here


async def test_a_forwarded_write_answered_503_never_takes_effect_after_its_deadline(
    cluster: Replicas,
) -> None:
    """A write forwarded to a home that froze before reading it answers 503 ("may still
    take effect"). Once its deadline has passed it never does: the home, resumed, reads it
    and must not run it over the newer write its client made meanwhile (found by
    adversarial testing: the stale write overwrote the newer one seconds later)."""
    assert home_of(cluster.urls) == "0"
    async with Client(cluster.urls["1"], timeout=10) as client:
        await client.put("late", b"v0")  # forwarded: opens 1's stream to the home
        cluster.pause("0")
        try:
            with pytest.raises(Unavailable, match="may still take effect"):
                await client.put("late", b"stale")
            await asyncio.sleep(cluster.request_timeout)  # past the forward's deadline
            await client.put("late", b"newer")  # proposed by replica 1, the home being down
        finally:
            cluster.resume("0")
        values = []
        for _ in range(20):  # the home runs what it reads at once, if it runs it
            await asyncio.sleep(0.1)
            got = await client.get("late")
            values.append(None if got is None else got.value)
    assert set(values) == {b"newer"}, values
    expired = 'quorumkv_paxos_paths_total{path="forward_expired"} 1.0'
    async with aiohttp.ClientSession() as http, \
            http.get(cluster.urls["0"] + "/metrics") as resp:
        assert expired in (await resp.text()).splitlines()  # it got there, and was dropped


async def test_a_home_back_from_a_pause_does_not_answer_503(cluster: Replicas) -> None:
    """While a home is paused, the other replicas write its keys with higher ballots; back,
    it must not trust the promises it held from before (a one-round-trip accept that the
    peers refuse but it took itself is indeterminate: 503)."""
    assert home_of(cluster.urls) == "0"
    keys = [f"back-{i}" for i in range(30)]
    async with Client(cluster.urls["0"], timeout=10) as home, \
            Client(cluster.urls["1"], timeout=10) as other:
        for key in keys:
            await home.put(key, b"before")  # the home now holds a promise for each
        cluster.pause("0")
        try:
            await wait_until_unreachable(cluster.urls["1"], "0")
            for key in keys:
                await other.put(key, b"during")  # proposed by replica 1, higher ballots
        finally:
            cluster.resume("0")
        failures = []
        for key in keys:
            try:
                await home.put(key, b"after")
            except Unavailable as exc:
                failures.append(f"{key}: {exc}")
        assert failures == []
        for key in keys:
            got = await other.get(key)
            assert got is not None and got.value == b"after", key


async def test_a_home_back_from_a_pause_is_the_home_again_only_once_settled(
        cluster: Replicas) -> None:
    """Back from a pause, the home answers at once, but the replica that stood in for it
    stays the home for SETTLE seconds, for every replica, the returning one included (it
    forwards its clients' writes too); then the home takes over again."""
    assert home_order(cluster.urls) == ["0", "1", "2"]
    forwards = 'quorumkv_paxos_paths_total{path="forward"}'

    async def proposals(node: str) -> float:
        return sum([await metric(cluster.urls[node], f'quorumkv_paxos_paths_total{{path="{p}"}}')
                    for p in ("fast_write", "slow_write")])

    async def write_through_0_and_2(label: str) -> None:
        async with Client(cluster.urls["0"]) as c0, Client(cluster.urls["2"]) as c2:
            for i in range(10):
                await c0.put(f"settle-{label}-{i}", b"v")
                await c2.put(f"settle-{label}-{i}", b"w")

    async def homes() -> list[str]:
        """Each replica's home, once every replica sees every member settled."""
        deadline = time.monotonic() + 5
        while True:
            views = []
            for url in cluster.urls.values():
                async with Client(url) as client:
                    views.append(await client.cluster())
            if all(m["settled"] for view in views for m in view["members"]):
                return [view["home"] for view in views]
            assert time.monotonic() < deadline, views
            await asyncio.sleep(0.1)

    assert await homes() == ["0", "0", "0"]  # a new cluster's replicas settle once ready
    cluster.pause("0")
    try:
        await wait_until_unreachable(cluster.urls["2"], "0")
        await asyncio.sleep(0.5)
    finally:
        cluster.resume("0")
    resumed = time.monotonic()
    await wait_until_reachable(cluster.urls["2"], "0")
    forwarded, proposed = await metric(cluster.urls["0"], forwards), await proposals("1")
    await write_through_0_and_2("back")
    async with Client(cluster.urls["0"]) as client:
        assert (await client.cluster())["home"] == "1"
    assert time.monotonic() - resumed < SETTLE  # still settling: 1 proposed them all
    assert await metric(cluster.urls["0"], forwards) - forwarded == 10
    assert await proposals("1") - proposed >= 20

    await asyncio.sleep(resumed + SETTLE + 1.0 - time.monotonic())
    assert await homes() == ["0", "0", "0"]
    forwarded, proposed = await metric(cluster.urls["0"], forwards), await proposals("0")
    await write_through_0_and_2("settled")
    assert await metric(cluster.urls["0"], forwards) - forwarded == 0
    assert await proposals("0") - proposed >= 20


async def test_after_every_replica_restarted_the_home_stays_0(cluster: Replicas) -> None:
    """After a restart of every replica, nobody has settled when 0 answers again: the others
    wait for it to settle rather than take the home from it for a moment and hand it back
    (found by adversarial testing: 2-3 hand-overs after a full restart)."""
    for node in ("0", "1", "2"):
        cluster.kill(node)
    cluster.start("1")
    cluster.start("2")
    await asyncio.to_thread(cluster.wait_ready, ["1", "2"])
    cluster.start("0")  # answers within SETTLE, but is ready after 1 and 2: they settle first
    await asyncio.to_thread(cluster.wait_ready, ["0"])
    seen: set[str] = set()
    settled = False
    deadline = time.monotonic() + SETTLE + 5
    while not settled:
        views = []
        for url in cluster.urls.values():
            async with Client(url) as client:
                views.append(await client.cluster())
        if all(m["reachable"] for view in views for m in view["members"]):  # all see 0 back
            seen |= {view["home"] for view in views}
        settled = all(m["settled"] for view in views for m in view["members"])
        assert time.monotonic() < deadline, views
        await asyncio.sleep(0.1)
    assert seen == {"0"}


async def test_a_home_whose_promise_was_overtaken_unnoticed_forgets_the_others(
        cluster: Replicas) -> None:
    """A replica that cannot reach the home while the home reaches it (a one-way cut)
    proposes the keys its clients write, and raises their promises on the other voters; the
    home notices nothing. Its first one-round-trip accept that a voter refuses is
    indeterminate, but then it forgets every promise it holds, so its next writes of the
    other keys prepare and succeed (found by adversarial testing: each answered 503)."""
    keys = [f"overtaken-{i}" for i in range(10)]
    async with Client(cluster.urls["0"], timeout=10) as home:
        for value in (b"1", b"2"):  # the home now holds a promise for each key
            for key in keys:
                await home.put(key, value)
        info, membership = await home.cluster(), await home.membership()
    config = Config.from_json(membership["config"])
    incarnation = next(m["incarnation"] for m in info["members"] if m["id"] == "1")
    overtaking = [Prepare(key, Ballot(10**6, "1", 1)) for key in keys]  # as "1" would
    for node in ("1", "2"):
        body = wire.pack_envelope("1", incarnation, config, list(overtaking))
        async with aiohttp.ClientSession() as http, \
                http.post(cluster.urls[node] + "/internal/v1/batch", data=body) as resp:
            assert resp.status == 200
    async with Client(cluster.urls["0"], timeout=10) as home:
        failed = []
        for key in keys:
            try:
                await home.put(key, b"3")
            except Unavailable:
                failed.append(key)
        assert len(failed) <= 1, failed
        for key in keys:
            if key not in failed:
                got = await home.get(key)
                assert got is not None and got.value == b"3"


async def test_with_the_home_dead_the_next_in_order_is_the_one_proposer(
    cluster: Replicas,
) -> None:
    """With the home (0) dead, every key is proposed by the next replica in the home order,
    1 (2 forwards to it), which then skips the prepare as a home does: no duels between 1
    and 2, whose split accepts would answer 503."""
    assert home_order(cluster.urls) == ["0", "1", "2"]
    keys = [f"orphan-{i}" for i in range(30)]
    cluster.kill("0")
    await wait_until_unreachable(cluster.urls["1"], "0")
    await wait_until_unreachable(cluster.urls["2"], "0")
    urls = [cluster.urls["1"], cluster.urls["2"]]

    async def fast_writes() -> float:
        return sum([await metric(url, 'quorumkv_paxos_paths_total{path="fast_write"}')
                    for url in urls])

    async with Client(urls[0], timeout=10) as a, Client(urls[1], timeout=10) as b:
        for round_ in range(3):
            before = await fast_writes()
            await asyncio.gather(*(client.put(key, f"{round_}".encode())
                                   for key in keys for client in (a, b)))
            if round_ > 0:  # the acting home holds a promise for each key since round 0
                assert await fast_writes() - before >= len(keys)
        for key in keys:
            got = await a.get(key)
            assert got is not None and got.value == b"2"


async def wait_until_unreachable(url: str, member: str, timeout: float = 5.0) -> None:
    await wait_until_seen(url, member, reachable=False, timeout=timeout)


async def wait_until_reachable(url: str, member: str, timeout: float = 5.0) -> None:
    await wait_until_seen(url, member, reachable=True, timeout=timeout)


async def wait_until_seen(url: str, member: str, *, reachable: bool, timeout: float) -> None:
    """Until the replica at `url` sees `member` as reachable, or as unreachable."""
    deadline = time.monotonic() + timeout
    async with Client(url) as client:
        while time.monotonic() < deadline:
            info = await client.cluster()
            if any(m["reachable"] for m in info["members"] if m["id"] == member) == reachable:
                return
            await asyncio.sleep(0.05)
    raise AssertionError(f"{url} does not see {member} as "
                         f"{'reachable' if reachable else 'unreachable'} after {timeout}s")


async def test_majority_lost_answers_503_within_bound(cluster: Replicas) -> None:
    cluster.kill("1")
    cluster.pause("2")
    try:
        async with Client(cluster.urls["0"], timeout=10) as client:
            for op in ("put", "get"):
                started = time.monotonic()
                with pytest.raises(Unavailable) as caught:
                    if op == "put":
                        await client.put("lost", b"v")
                    else:
                        await client.get("lost")
                assert time.monotonic() - started <= 5.0
                assert caught.value.retry_after >= 1
        assert cluster.status("0", "/readyz") == 503
        assert cluster.status("0", "/healthz") == 200
    finally:
        cluster.resume("2")


async def test_full_restart_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    replicas = Replicas(tmp_path, 3)
    try:
        replicas.start_all()
        acked = await write_many(replicas.urls["1"], "durable-", 200)
        assert len(acked) == 200
        for node in list(replicas.procs):
            replicas.kill(node)  # kill -9 all: only what was fsynced survives
        replicas.start_all()
        await assert_readable(replicas.urls["0"], acked)
    finally:
        replicas.stop_all()


async def test_replica_that_lost_its_disk_does_not_vote(cluster: Replicas) -> None:
    acked = await write_many(cluster.urls["0"], "disk-", 20)
    cluster.kill("2")
    shutil.rmtree(cluster.data_dir("2"))
    cluster.start("2")
    cluster.wait_alive(["2"])
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        async with Client(cluster.urls["2"]) as client:
            info = await client.cluster()
        if "incarnation" in info["reason"]:
            break
        await asyncio.sleep(0.3)
    assert "incarnation" in info["reason"] and not info["ready"]
    assert cluster.status("2", "/readyz") == 503
    # with only one voter left among the healthy ones, writes need 0 and 1 both
    await assert_readable(cluster.urls["0"], acked)
    cluster.kill("1")
    async with Client(cluster.urls["0"], timeout=10) as client:
        with pytest.raises(Unavailable):
            await client.put("disk-0", b"must not be acknowledged by 0 and a stranger")


async def test_peer_endpoints_need_the_token(tmp_path: Path) -> None:
    replicas = Replicas(tmp_path, 3, token="s3cret")
    try:
        replicas.start_all()
        async with Client(replicas.urls["0"]) as client:
            await client.put("t", b"v")
            assert (await client.get("t")).value == b"v"  # type: ignore[union-attr]
        async with aiohttp.ClientSession() as http:
            url = replicas.urls["1"] + "/internal/v1/batch"
            async with http.post(url, data=b"x") as resp:
                assert resp.status == 401
            async with http.post(url, data=b"x", headers={"Authorization": "Bearer no"}) as r:
                assert r.status == 401
            unknown = replicas.urls["1"] + "/internal/v1/nothing-here"
            async with http.get(unknown) as resp:
                assert resp.status == 401
            async with http.get(unknown, headers={"Authorization": "Bearer s3cret"}) as resp:
                assert resp.status == 404 and (await resp.json())["error"] == "unknown_path"
            async with http.get(unknown, headers={"Authorization": "bEaReR s3cret"}) as resp:
                assert resp.status == 404  # the scheme's case does not matter (RFC 9110)
            stream = replicas.urls["1"] + "/internal/v1/stream"
            for headers in ({}, {"Authorization": "Bearer no"}):
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await http.ws_connect(stream, headers=headers)
                assert refused.value.status == 401
        port = int(replicas.urls["1"].rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            raw.sendall(b"GET /internal/v1/membership HTTP/1.1\r\nHost: x\r\n"
                        b"Authorization: Bearer s3cret\xe9\r\nConnection: close\r\n\r\n")
            assert raw.recv(64).startswith(b"HTTP/1.1 401 ")  # not 500 for a non-UTF-8 token
        # a replica given the wrong token says why its peers are unreachable
        replicas.kill("2")
        wrong = tmp_path / "wrong-token"
        wrong.write_text("not-the-token")
        command = [str(wrong) if arg == str(replicas.token_file) else arg
                   for arg in replicas.command("2")]
        log_path = tmp_path / "wrong-token.log"
        with log_path.open("ab") as log:
            stranger = subprocess.Popen(command, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 15
            while "401" not in log_path.read_text():
                assert time.monotonic() < deadline, log_path.read_text()[-2000:]
                await asyncio.sleep(0.2)
            assert '"msg":"peer unreachable"' in log_path.read_text()
        finally:
            stranger.kill()
            stranger.wait()
    finally:
        replicas.stop_all()


async def test_client_error_type_for_unreachable_endpoint() -> None:
    async with Client("http://127.0.0.1:9", timeout=2) as client:
        with pytest.raises((aiohttp.ClientError, OSError, QuorumKVError)):
            await client.get("x")


async def test_contended_writes_on_a_healthy_cluster_all_succeed(cluster: Replicas) -> None:
    """Proposers racing on one key settle the key instead of answering 503."""
    clients = [Client(url, timeout=10) for url in cluster.urls.values()]
    outcomes: list[str] = []

    async def writer(i: int) -> None:
        for n in range(25):
            try:
                await clients[(i + n) % len(clients)].put("hot", f"{i}.{n}".encode())
                outcomes.append("ok")
            except QuorumKVError as exc:
                outcomes.append(f"{exc.status}: {exc.detail}")

    try:
        await asyncio.gather(*(writer(i) for i in range(4)))
    finally:
        for client in clients:
            await client.close()
    assert outcomes == ["ok"] * 100


async def test_concurrent_writes_of_one_key_share_rounds_and_keep_their_own_versions(
    cluster: Replicas,
) -> None:
    """Writes that queue at the home behind a round in flight of their key go together in
    its next round: each is told a version of its own, the last one's is the key's, an
    If-Match on any other fails, and of racing compare-and-sets and creates exactly one
    wins."""
    urls = list(cluster.urls.values())
    clients = [Client(url, timeout=10) for url in urls]
    batched = 'quorumkv_paxos_paths_total{path="batched"}'
    try:
        before = sum([await metric(url, batched) for url in urls])
        values = [f"v{i}".encode() for i in range(48)]
        puts = await asyncio.gather(*(clients[i % 3].put("hot/batched", value)
                                      for i, value in enumerate(values)))
        assert sum([await metric(url, batched) for url in urls]) > before
        etag_of = {value: put.etag for value, put in zip(values, puts, strict=True)}
        assert len(set(etag_of.values())) == len(values)
        final = await clients[1].get("hot/batched")
        assert final is not None and etag_of[final.value] == final.etag
        overwritten = next(etag for value, etag in etag_of.items() if value != final.value)
        with pytest.raises(PreconditionFailed):
            await clients[2].put("hot/batched", b"stale", if_match=overwritten)

        async def won(attempt: Awaitable[PutResult]) -> bool:
            try:
                await attempt
            except PreconditionFailed:
                return False
            return True

        assert sum(await asyncio.gather(*(
            won(clients[i % 3].put("hot/batched", f"cas{i}".encode(), if_match=final.etag))
            for i in range(24)))) == 1
        assert sum(await asyncio.gather(*(
            won(clients[i % 3].put("hot/created", f"c{i}".encode(), create_only=True))
            for i in range(24)))) == 1
    finally:
        for client in clients:
            await client.close()


async def test_a_write_routing_client_sends_writes_to_the_home(cluster: Replicas) -> None:
    """`Client(route_writes=True)` sends writes to the home, so no replica forwards them
    (a plain client's writes through another replica are all forwarded), and reads to its
    endpoint. With the home dead, writes go to the next replica in the home order, which
    acts as home; a write that may have reached the dead one is not sent again."""
    urls = list(cluster.urls.values())
    forwards = 'quorumkv_paxos_paths_total{path="forward"}'

    async def forwarded() -> float:
        return sum([await metric(url, forwards) for url in urls])

    async def served(node: str) -> float:
        return await metric(cluster.urls[node], 'quorumkv_requests_total{op="get",outcome="200"}')

    keys = [f"routed/{i}" for i in range(30)]
    async with Client(cluster.urls["2"], timeout=10, route_writes=True) as routed, \
            Client(cluster.urls["2"], timeout=10) as plain:
        before, reads_at_2 = await forwarded(), await served("2")
        for key in keys:
            await routed.put(key, key.encode())
        for key in keys:
            got = await routed.get(key)
            assert got is not None and got.value == key.encode()
        assert await forwarded() == before
        assert await served("2") - reads_at_2 == len(keys)
        for key in keys:
            await plain.put(key, b"plain")
        assert await forwarded() - before == len(keys)

        cluster.pause("0")  # the home: a write reaches it (kept-alive connection) and hangs
        write = asyncio.create_task(routed.put(keys[0], b"lost?"))
        await asyncio.sleep(0.3)
        assert not write.done()
        cluster.kill("0")  # its connection breaks: the write may have been applied
        with pytest.raises((QuorumKVError, aiohttp.ClientError)):
            await write
        await wait_until_unreachable(cluster.urls["1"], "0")
        for key in keys:
            await routed.put(key, b"after")
        for key in keys:
            got = await routed.get(key)
            assert got is not None and got.value == b"after"


@pytest.fixture
async def dying_replica() -> AsyncIterator[tuple[str, list[bytes]]]:
    """A server that answers its first request `404` and keeps the connection alive, then
    takes the next request and closes without answering, as a replica killed mid-request
    does; yields its URL and the methods of every request it received."""
    received: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            await reader.readexactly(length)
            received.append(head.split(b" ")[0])
            if len(received) > 1:
                writer.close()
                return
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 35\r\n\r\n"
                         b'{"error":"not_found","detail":"no"}')

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", received
    server.close()
    await server.wait_closed()


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
async def test_a_write_whose_connection_broke_is_never_resent_by_the_client(
        method: str, dying_replica: tuple[str, list[bytes]]) -> None:
    """aiohttp resends PUT and DELETE once when a kept-alive connection breaks, but the first
    may have been applied: the client's session (`new_session`) must send it once."""
    url, received = dying_replica
    async with Client(url, timeout=5) as client:
        assert await client.get("k") is None  # the connection is now kept alive
        with pytest.raises((QuorumKVError, aiohttp.ClientError)):
            if method == "PUT":
                await client.put("k", b"v", if_match='"1.1.1"')
            else:
                await client.delete("k", if_match='"1.1.1"')
    assert received == [b"GET", method.encode()]


async def test_a_relayed_write_whose_connection_broke_is_never_resent(
        dying_replica: tuple[str, list[bytes]]) -> None:
    """A replica outside the membership relays key requests to a member. Its session resent
    a compare-and-set after the member was killed holding it; the resend went to the next
    member, which answered 412 for the change the first had made (Jepsen, seed 14)."""
    url, received = dying_replica
    session = replica_session("127.0.0.1")
    node = cast(Node, SimpleNamespace(
        membership=SimpleNamespace(config=make_config(5, ["0"], None, {"0": url})),
        settings=SimpleNamespace(node_id="9", request_timeout=5.0), session=session, links={}))
    try:
        with pytest.raises(NotFound):
            await relay.send(node, "k", None)
        with pytest.raises(QuorumUnavailable) as unavailable:
            await relay.send(node, "k", Put(b"v", if_match='"1.1.1"'))
        assert unavailable.value.indeterminate
        assert received == [b"GET", b"PUT"]
    finally:
        await session.close()
