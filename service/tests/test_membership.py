"""Scaling real replica processes while clients write: nothing acknowledged is lost."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import aiohttp
import pytest
from quorumkv.client import Client, PreconditionFailed, QuorumKVError, Unavailable
from quorumkv.core.changes import Put
from quorumkv.core.messages import Forward
from quorumkv.core.quorum import Config, make_config
from quorumkv.placement import home_order
from quorumkv.replication import reconfig as reconfig_driver
from quorumkv.replication.membership import Membership
from quorumkv.replication.reconfig import ChangeRefused
from quorumkv.replication.transport import PeerLink, PeerRefused
from replicas import Replicas

pytestmark = pytest.mark.integration


class Writer:
    """Writes unique keys through a few replicas until stopped; keeps what was acknowledged."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.acked: dict[str, bytes] = {}
        self.failed = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        clients = [Client(url, timeout=5) for url in self.urls]
        i = 0
        try:
            while not self._stop.is_set():
                key, value = f"w{i}", f"v{i}".encode()
                try:
                    await clients[i % len(clients)].put(key, value)
                    self.acked[key] = value
                except (TimeoutError, QuorumKVError, OSError):
                    self.failed += 1
                    await asyncio.sleep(0.05)
                i += 1
        finally:
            for client in clients:
                await client.close()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task


async def change(replicas: Replicas, driver: str, members: list[str],
                 timeout: float = 120) -> dict[str, object]:
    target = {node: replicas.urls[node] for node in members}
    deadline = time.monotonic() + timeout
    async with Client(replicas.urls[driver]) as client:
        view = await client.change_membership(target)
        while time.monotonic() < deadline:
            view = await client.membership()
            state = view["change"]["state"]  # type: ignore[index]
            if state == "done":
                return view
            assert state != "failed", view
            await asyncio.sleep(0.2)
    raise AssertionError(f"change to {members} not done in {timeout}s: {view}")


async def assert_all_readable(url: str, acked: dict[str, bytes]) -> None:
    async with Client(url, timeout=10) as client:
        for key, value in acked.items():
            got = await client.get(key)
            assert got is not None and got.value == value, key


async def cluster_view(url: str) -> dict[str, object]:
    async with Client(url) as client:
        return await client.cluster()


async def fill(url: str, count: int) -> dict[str, bytes]:
    """`count` keys written through `url`: enough for a change's rescan to take a while."""
    values = {f"k{i}": b"x" * 64 for i in range(count)}
    async with Client(url) as client:
        await asyncio.gather(*(client.put(key, value) for key, value in values.items()))
    return values


async def until_rescanning(client: Client) -> None:
    """Until the change `client`'s replica drives is rescanning (its joint configuration
    is installed)."""
    deadline = time.monotonic() + 30
    while (await client.membership())["change"]["state"] != "rescanning":  # type: ignore[index]
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


async def test_scale_3_to_5_to_3_under_writes(tmp_path: Path) -> None:
    replicas = Replicas(tmp_path, 3)
    try:
        replicas.start_all()
        writer = Writer([replicas.urls[n] for n in ("0", "1", "2")])
        writer.start()
        await asyncio.sleep(0.5)
        for node in ("3", "4"):
            replicas.add(node)
            assert replicas.status(node, "/readyz") == 503  # not a member yet
        view = await change(replicas, "0", ["0", "1", "2", "3", "4"])
        assert view["config"]["members"] == ["0", "1", "2", "3", "4"]  # type: ignore[index]
        replicas.wait_ready(["3", "4"])
        info = await cluster_view(replicas.urls["4"])
        assert info["quorum"] == 3 and len(info["members"]) == 5  # type: ignore[arg-type]
        # the new members really hold the data: lose two old ones, read from the rest
        await asyncio.sleep(0.5)
        await writer.stop()
        replicas.kill("0")
        replicas.kill("1")
        await assert_all_readable(replicas.urls["3"], writer.acked)
        replicas.start("0")
        replicas.start("1")
        replicas.wait_ready(["0", "1"])
        acked_before = dict(writer.acked)
        writer = Writer([replicas.urls[n] for n in ("0", "3")])
        writer.start()
        await change(replicas, "0", ["0", "1", "2"])
        await writer.stop()
        for node in ("3", "4"):
            replicas.kill(node)
        await assert_all_readable(replicas.urls["2"], {**acked_before, **writer.acked})
        assert len(writer.acked) > 0
        info = await cluster_view(replicas.urls["1"])
        assert [m["id"] for m in info["members"]] == ["0", "1", "2"]  # type: ignore[union-attr]
    finally:
        replicas.stop_all()


async def test_change_interrupted_by_killing_its_driver_is_resumed(tmp_path: Path) -> None:
    replicas = Replicas(tmp_path, 3)
    try:
        replicas.start_all()
        filled = await fill(replicas.urls["1"], 1500)
        replicas.add("3")
        target = {n: replicas.urls[n] for n in ("0", "1", "2", "3")}
        async with Client(replicas.urls["0"]) as client:
            await client.change_membership(target)
            await until_rescanning(client)
        replicas.kill("0")  # mid-rescan: the cluster is left in the joint configuration
        info = await cluster_view(replicas.urls["1"])
        assert info["joining"] == ["0", "1", "2", "3"]
        assert (info["quorum"], info["joining_quorum"]) == (2, 3)  # a majority of each set
        view = await change(replicas, "2", ["0", "1", "2", "3"])  # any staying member resumes
        assert view["config"]["members"] == ["0", "1", "2", "3"]  # type: ignore[index]
        replicas.start("0")
        replicas.wait_ready(["0", "3"])
        await assert_all_readable(replicas.urls["3"], filled)
    finally:
        replicas.stop_all()


async def test_a_paused_driver_does_not_undo_what_was_changed_without_it(
        tmp_path: Path) -> None:
    """The driver of 3→5 freezes mid-rescan; another member finishes the change, then
    scales back to 3 and the two extra replicas stop. When the first wakes up it must not
    carry on its change (before: it installed {0..4} again, skipping the rescan as done,
    so two dead replicas were voters again; found by exploratory testing)."""
    replicas = Replicas(tmp_path, 3)
    try:
        replicas.start_all()
        filled = await fill(replicas.urls["1"], 1500)
        for node in ("3", "4"):
            replicas.add(node)
        five = ["0", "1", "2", "3", "4"]
        async with Client(replicas.urls["0"]) as client:
            await client.change_membership({n: replicas.urls[n] for n in five})
            await until_rescanning(client)
        replicas.pause("0")
        await change(replicas, "1", five)
        await change(replicas, "1", ["0", "1", "2"])
        for node in ("3", "4"):
            replicas.kill(node)
        replicas.resume("0")
        await asyncio.sleep(5)  # the first driver wakes up and looks again
        info = await cluster_view(replicas.urls["1"])
        assert [m["id"] for m in info["members"]] == ["0", "1", "2"], info  # type: ignore[union-attr]
        assert info["joining"] is None, info
        async with Client(replicas.urls["0"], timeout=10) as client:
            assert (await client.membership())["change"]["state"] == "failed"  # type: ignore[index]
            await client.put("after", b"v")  # two of three members up: writes go on
        replicas.wait_ready(["0", "1", "2"])
        await assert_all_readable(replicas.urls["2"], filled)
    finally:
        replicas.stop_all()


async def test_a_removed_member_added_back_forgets_its_stale_state(tmp_path: Path) -> None:
    """A kept data directory (a retained PVC) re-enters empty, then catches up by rescan."""
    replicas = Replicas(tmp_path, 3)
    try:
        replicas.start_all()
        replicas.add("3")
        four = ["0", "1", "2", "3"]
        await change(replicas, "0", four)
        async with Client(replicas.urls["1"]) as client:
            await client.put("k", b"old")
        await change(replicas, "0", ["0", "1", "2"])  # node 3 keeps running, with its data
        async with Client(replicas.urls["1"]) as client:
            await client.put("k", b"new")
            await client.put("later", b"x")
        await change(replicas, "1", four)
        assert replicas.log("3").count("joined the membership") == 2
        replicas.wait_ready(["3"])
        replicas.kill("0")  # a quorum of 3 out of 4 must now include node 3
        await assert_all_readable(replicas.urls["3"], {"k": b"new", "later": b"x"})
    finally:
        replicas.stop_all()


async def test_a_batch_refused_for_a_newer_configuration_counts_as_not_sent(
        tmp_path: Path) -> None:
    """A home that moved to a newer configuration refuses a forwarded change whole: the
    forwarder may then run it itself instead of answering an indeterminate 503."""
    replicas = Replicas(tmp_path, 3)
    try:
        replicas.start_all()
        epoch = (await cluster_view(replicas.urls["0"]))["epoch"]
        old = make_config(epoch, ["0", "1", "2"], None, replicas.urls)  # type: ignore[arg-type]
        await change(replicas, "0", ["0", "1"])
        membership = Membership("2", "stale-view", old, {}, lambda key, value: _done())
        async with aiohttp.ClientSession() as session:
            link = PeerLink("0", replicas.urls["0"], session=session, membership=membership,
                            token=None, timeout=5)
            with pytest.raises(PeerRefused) as refused:
                await link.exchange([Forward("k", Put(b"never"))])
        assert not refused.value.sent
        assert membership.config.members == {"0", "1"}  # adopted from the refusal
        async with Client(replicas.urls["1"]) as client:
            assert await client.get("k") is None
    finally:
        replicas.stop_all()


async def test_a_removed_replica_passes_key_requests_on_to_a_member(tmp_path: Path) -> None:
    """Until its pod is gone, a removed replica still gets the requests of clients that
    kept a connection to it: it relays them to a member (before, each answered 503)."""
    replicas = Replicas(tmp_path, 4)
    try:
        replicas.start_all()
        await change(replicas, "0", ["0", "1", "2"])
        async with Client(replicas.urls["3"]) as removed, \
                Client(replicas.urls["0"]) as member:
            put = await removed.put("k", b"v1", create_only=True)
            assert put.created
            with pytest.raises(PreconditionFailed):
                await removed.put("k", b"v2", create_only=True)
            got = await removed.get("k")
            assert got is not None and (got.value, got.etag) == (b"v1", put.etag)
            assert await member.get("k") == got
            async with aiohttp.ClientSession() as session, \
                    session.get(replicas.urls["3"] + "/v1/kv/k",
                                headers={"If-None-Match": put.etag}) as resp:
                assert resp.status == 304  # conditions hold for relayed reads too
            with pytest.raises(PreconditionFailed):
                await removed.delete("k", if_match='"not-it"')
            assert await removed.delete("k", if_match=put.etag)
            assert await removed.get("k") is None and await member.get("k") is None
            assert not await removed.delete("k")
        # relayed once at most: a request that was passed on already is not passed again
        async with aiohttp.ClientSession() as session, \
                session.get(replicas.urls["3"] + "/v1/kv/k",
                            headers={"X-QuorumKV-Relayed": "9"}) as resp:
            assert resp.status == 503 and "not a member" in await resp.text()
        # a paused member (here the home, passed on to first) is passed over (the
        # heartbeats tell), not waited for
        assert home_order(["0", "1", "2"])[0] == "0"
        replicas.pause("0")
        await asyncio.sleep(1)
        started = time.monotonic()
        async with Client(replicas.urls["3"]) as removed:
            await removed.put("p", b"v")
            assert (await removed.get("p")) is not None
        assert time.monotonic() - started < 2  # a request's timeout is 2.5 s
        replicas.kill("0")
        replicas.kill("1")
        started = time.monotonic()
        async with Client(replicas.urls["3"]) as removed:
            with pytest.raises(Unavailable):
                await removed.put("k", b"v3")
        assert time.monotonic() - started < 5
    finally:
        replicas.stop_all()


async def test_a_change_to_members_that_are_not_up_is_refused(tmp_path: Path) -> None:
    """A new member set without a majority up would stop the cluster once its joint
    configuration is installed (before: 503s for good, and no way back): refused, and
    malformed member sets are refused too, changing nothing."""
    replicas = Replicas(tmp_path, 3)
    try:
        replicas.start_all()
        dead = {"7": "http://127.0.0.1:1", "8": "http://127.0.0.1:2"}
        async with Client(replicas.urls["0"]) as client:
            with pytest.raises(QuorumKVError) as refused:
                await client.change_membership({"0": replicas.urls["0"], **dead})
            assert refused.value.status == 409 and "do not answer" in refused.value.detail
            # a new id at a member's URL would give that replica two votes
            with pytest.raises(QuorumKVError) as refused:
                await client.change_membership({**replicas.urls, "3": replicas.urls["1"]})
            assert refused.value.status == 409 and "same replica as 1" in refused.value.detail
            member = {"0": replicas.urls["0"]}
            for bad in ({**member, "1": replicas.urls["1"] + ",2=" + replicas.urls["2"]},
                        {**member, "1=2": replicas.urls["1"]}, {**member, "1": 7},
                        {**member, "1": "ftp://x"}):
                with pytest.raises(QuorumKVError) as refused:
                    await client.change_membership(bad)  # type: ignore[arg-type]
                assert refused.value.status == 400, bad
            assert (await client.membership())["config"]["epoch"] == 1
            await client.put("still", b"writable")
    finally:
        replicas.stop_all()


async def test_a_replica_of_another_cluster_is_refused_not_merged(tmp_path: Path) -> None:
    """Adding a replica of another cluster by mistake (a wrong URL) is refused: before
    cluster ids it adopted this cluster's configuration and dropped its own data."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    ours, theirs = Replicas(tmp_path / "a", 3), Replicas(tmp_path / "b", 1)
    try:
        ours.start_all()
        theirs.start_all()
        ours.wait_ready(["0", "1", "2"])
        theirs.wait_ready(["0"])
        ids = {node: (await cluster_view(url))["cluster_id"] for node, url in ours.urls.items()}
        their_id = (await cluster_view(theirs.urls["0"]))["cluster_id"]
        assert len(set(ids.values())) == 1 and None not in ids.values(), ids
        assert their_id not in (None, ids["0"])
        async with Client(theirs.urls["0"]) as client:
            await client.put("theirs", b"kept")
        async with Client(ours.urls["0"]) as client:
            with pytest.raises(QuorumKVError) as refused:
                await client.change_membership({**ours.urls, "3": theirs.urls["0"]})
            assert refused.value.status == 409 and "another cluster" in refused.value.detail
            assert (await client.membership())["config"]["epoch"] == 1
            await client.put("ours", b"writable")
        info = await cluster_view(theirs.urls["0"])
        assert info["epoch"] == 1 and info["cluster_id"] == their_id and info["ready"]
        await assert_all_readable(theirs.urls["0"], {"theirs": b"kept"})
        assert "refused a replica of another cluster" in theirs.log("0")
    finally:
        ours.stop_all()
        theirs.stop_all()


async def test_a_replica_that_refuses_our_configuration_is_not_added(tmp_path: Path) -> None:
    """A cluster founded before cluster ids has none to tell a stranger by. A replica about
    to be added that refuses our configuration (here: it knows a newer one) must neither
    hand its configuration to us nor be added (before: every member adopted it)."""
    theirs = Replicas(tmp_path, 3)
    try:
        theirs.start_all()
        await change(theirs, "0", ["0", "1"])  # their epoch is now 3
        ours = make_config(1, ["a"], None, {"a": "http://127.0.0.1:1"})  # no id, epoch 1
        membership = Membership("a", "inc-a", ours, {}, lambda key, value: _done())
        async with aiohttp.ClientSession() as session:
            link = PeerLink("d", theirs.urls["0"], session=session, membership=membership,
                            token=None, timeout=5)
            with pytest.raises(ChangeRefused, match="refuses this cluster's configuration"):
                await reconfig_driver._answers(link, member=False)
            assert membership.config == ours  # not adopted from a replica about to be added
            assert await reconfig_driver._answers(link, member=True)  # a member: it answers
        assert membership.config == ours
    finally:
        theirs.stop_all()


async def test_a_peer_that_refuses_our_configuration_does_not_count_for_readiness(
        tmp_path: Path) -> None:
    """A replica alone in a configuration its peers refuse (a stalled change) counted them
    as reachable, and so reported ready while every key request got 503."""
    replicas = Replicas(tmp_path, 3)
    try:
        replicas.start_all()
        async with Client(replicas.urls["0"]) as client:
            theirs = Config.from_json((await client.membership())["config"])
        split = theirs._replace(members=frozenset({"0", "9"}),
                                urls=(("0", replicas.urls["0"]), ("9", "http://127.0.0.1:1")))
        membership = Membership("9", "inc-9", split, {}, lambda key, value: _done())
        async with aiohttp.ClientSession() as session:
            link = PeerLink("0", replicas.urls["0"], session=session, membership=membership,
                            token=None, timeout=5)
            assert not await link.heartbeat() and not link.agrees  # same epoch, other set
            membership.config = theirs  # once it takes the cluster's configuration
            await link.heartbeat()  # refused still (9 is no member), but not for it
            assert link.agrees
    finally:
        replicas.stop_all()


async def test_a_restarted_member_stays_ready_while_a_change_fills_the_new_ones(
        tmp_path: Path) -> None:
    """1→3 right after the only member restarted: it must stay ready, or no replica
    serves until the change is done (found on Kubernetes: about a minute without one)."""
    replicas = Replicas(tmp_path, 1)
    try:
        replicas.start_all()
        await fill(replicas.urls["0"], 3000)
        replicas.kill("0")
        replicas.start("0")
        replicas.wait_ready(["0"])
        for node in ("1", "2"):
            replicas.add(node)
        async with Client(replicas.urls["0"]) as client:
            await client.change_membership({n: replicas.urls[n] for n in ("0", "1", "2")})
            not_ready_since, longest = None, 0.0  # a probe notices after two failures
            while (await client.membership())["change"]["state"] != "done":  # type: ignore[index]
                now = time.monotonic()
                if replicas.status("0", "/readyz") == 200:
                    not_ready_since = None
                else:
                    not_ready_since = not_ready_since or now
                    longest = max(longest, now - not_ready_since)
                await asyncio.sleep(0.05)
        # a new member is unreachable for a heartbeat (0.25 s) until first contact: allowed
        assert longest < 1.0
    finally:
        replicas.stop_all()


def _done() -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


async def test_a_replica_removed_and_added_back_while_down_forgets_its_old_state(
        tmp_path: Path) -> None:
    """Node 3 is down while it is removed, a key is deleted (its tombstone collected), and
    it is added back. It never saw the removal; the configuration says when it joined, so
    it knows its data predates that and forgets it (before: the key came back from it)."""
    replicas = Replicas(tmp_path, 4, env={"QUORUMKV_TOMBSTONE_TTL": "0.5"})
    try:
        replicas.start_all()
        async with Client(replicas.urls["0"]) as client:
            await client.put("k", b"deleted later")
        replicas.kill("3")
        await change(replicas, "0", ["0", "1", "2"])
        async with Client(replicas.urls["0"]) as client:
            assert await client.delete("k")
        deadline = time.monotonic() + 30
        while any([(await cluster_view(replicas.urls[n]))["keys"] for n in ("0", "1", "2")]):
            assert time.monotonic() < deadline, "the tombstone was not collected"
            await asyncio.sleep(0.2)
        await change(replicas, "0", ["0", "1", "2", "3"])
        replicas.start("3")
        replicas.wait_ready(["3"])
        replicas.kill("0")  # a quorum of 3 out of 4 must now include node 3
        async with Client(replicas.urls["1"]) as client:
            assert await client.get("k") is None
        assert replicas.log("3").count("joined the membership") == 2  # at bootstrap, now
    finally:
        replicas.stop_all()


async def test_fresh_replicas_never_bootstrap_a_cluster_of_their_own(tmp_path: Path) -> None:
    """After a scale-down to one member, empty replicas from the old peer list come back:
    with the member down they must not form a quorum together; with it up they learn the
    real configuration and wait to be added."""
    replicas = Replicas(tmp_path, 3)
    try:
        replicas.start_all()
        async with Client(replicas.urls["0"]) as client:
            await client.put("k", b"v")
        await change(replicas, "0", ["0"])
        for node in ("1", "2"):
            replicas.kill(node)
            shutil.rmtree(replicas.data_dir(node))
        replicas.kill("0")
        for node in ("1", "2"):
            replicas.start(node)
        replicas.wait_alive(["1", "2"])
        await asyncio.sleep(2)  # plenty of heartbeats between the two fresh replicas
        for node in ("1", "2"):
            info = await cluster_view(replicas.urls[node])
            assert info["epoch"] == 0 and not info["ready"], info
        async with Client(replicas.urls["1"], timeout=10) as client:
            with pytest.raises(QuorumKVError):
                await client.put("k", b"split brain")
        replicas.start("0")
        replicas.wait_ready(["0"])
        deadline = time.monotonic() + 15
        while (await cluster_view(replicas.urls["1"]))["epoch"] == 0:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        info = await cluster_view(replicas.urls["1"])
        assert [m["id"] for m in info["members"]] == ["0"] and not info["ready"]  # type: ignore[union-attr]
        await assert_all_readable(replicas.urls["0"], {"k": b"v"})
        # waiting to be added, they heartbeat the member 4 times a second: it says so once
        # each; and dropping each other as peers on learning the configuration broke nothing
        await asyncio.sleep(1)
        refused = [(entry["peer"], entry["incarnation"]) for entry in map(
            json.loads, replicas.log("0").splitlines())
            if entry["msg"] == "refused a peer of unknown identity"]
        assert {peer for peer, _ in refused} == {"1", "2"}
        assert len(refused) == len(set(refused))  # once per identity (and per run of node 0)
        for node in ("0", "1", "2"):
            assert '"level":"error"' not in replicas.log(node), replicas.log(node)[-3000:]
    finally:
        replicas.stop_all()
