"""One replica: opens its storage and identity, wires acceptor, links, coordinator, anti-entropy.

The HTTP layer holds a `Node` and asks it to do things; the node knows nothing of HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from functools import partial
from typing import Any

import aiohttp

from quorumkv.client import new_session
from quorumkv.core.quorum import Config, founding_id, make_config
from quorumkv.metrics import Metrics
from quorumkv.replication.antientropy import AntiEntropy
from quorumkv.replication.coordinator import FORWARD_GRACE, Coordinator
from quorumkv.replication.local_acceptor import META_FLOOR, LocalAcceptor
from quorumkv.replication.membership import Membership, config_from_meta, known_from_meta
from quorumkv.replication.reconfig import MembershipChanger
from quorumkv.replication.tombstones import TombstoneCollector
from quorumkv.replication.transport import PeerLink
from quorumkv.settings import ServeSettings
from quorumkv.storage.base import Storage, StorageError
from quorumkv.storage.committer import GroupCommitter
from quorumkv.storage.log import LogStorage
from quorumkv.storage.memory import MemoryStorage

log = logging.getLogger("quorumkv.node")

# A commit that failed leaves memory ahead of the disk, and a failed fsync cannot be retried
# (Linux may already have dropped the dirty pages), so the replica stops at once and its
# restart replays the log, as PostgreSQL does on a failed fsync. `serve`'s other codes: 2 for
# bad flags (cli.EXIT_USAGE), 3 for a data directory it cannot start on (server.EXIT_STORAGE),
# 5 for an address it cannot listen on (server.EXIT_LISTEN).
EXIT_STORAGE_FAILED = 4
HEARTBEAT_INTERVAL = 0.25  # with HEARTBEAT_TIMEOUT: a silent peer is noticed in 0.4-0.65 s
# a commit waiting longer for the disk makes the replica not ready: its acknowledgements
# (and every write that needs its vote) wait with it
STORAGE_STALL_SECONDS = 5.0


def open_storage(settings: ServeSettings) -> tuple[Storage, str, int]:
    """Open the data directory; returns the storage, the incarnation id and this boot's number.

    The incarnation is created with the directory and never changes; the boot counter is
    bumped durably before anything else happens, so ballots of this run are new.
    """
    try:
        disk = LogStorage(settings.data_dir)
    except OSError as exc:  # not a directory, not writable, unreadable: the operator's to fix
        raise StorageError(f"cannot open the data directory: {exc}") from None
    incarnation = disk.get_meta("incarnation") or uuid.uuid4().hex
    boot = int(disk.get_meta("boot") or "0") + 1
    disk.commit({}, {"incarnation": incarnation, "boot": str(boot)})
    if not settings.volatile:
        return disk, incarnation, boot
    log.warning("UNSAFE volatile mode: Paxos state is kept in memory only",
                extra={"data_dir": str(settings.data_dir)})
    disk.close()
    return MemoryStorage({"incarnation": incarnation}), incarnation, boot


def bootstrap_config(settings: ServeSettings) -> Config:
    """Epoch 0 from the peer list, for a data directory that has no configuration yet.

    Epoch 0 is only a proposal: the replica does not vote or serve under it. It adopts the
    configuration of any peer that has one; it makes epoch 1 of the list itself only when
    every listed peer answers and none has a configuration (a new cluster: all replicas do
    the same and agree). So a replica that comes back empty after a scale-down, or one added
    by scaling (not in the list), never forms a quorum of its own with another fresh one: it
    learns the real configuration and waits to be added.
    """
    return make_config(0, settings.peers, None, settings.peers)


class Node:
    def __init__(self, settings: ServeSettings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        storage, self.incarnation, self.boot = open_storage(settings)
        self._committer = GroupCommitter(storage, self.metrics.observe_commit,
                                         on_failure=self._storage_failed)
        self.local = LocalAcceptor(self._committer, storage.load(),
                                   int(storage.get_meta(META_FLOOR) or "0"))
        self.metrics.keys.set_function(lambda: len(self.local))
        self.metrics.tombstones.set_function(lambda: len(self.local.tombstones))
        self.metrics.commit_age.set_function(self._committer.commit_age)
        config = config_from_meta(storage.get_meta) or bootstrap_config(settings)
        self.membership = Membership(
            settings.node_id, self.incarnation, config,
            known_from_meta(storage.get_meta, set(config.voters)), self._committer.stage_meta)
        self.membership.on_change(self._configuration_changed)
        self.membership.on_join(self._joined)
        self._session: aiohttp.ClientSession | None = None
        self.links: dict[str, PeerLink] = {}
        # forwarded changes wait for a whole Paxos round at the home: their own connections,
        # so they never hold up the acceptor messages batched on `links`
        self.forward_links: dict[str, PeerLink] = {}
        self.coordinator: Coordinator | None = None
        self.antientropy: AntiEntropy | None = None
        self.changer: MembershipChanger | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._session = replica_session(self.settings.listen_host)
        self._link_voters(self.membership.config)
        self.coordinator = Coordinator(
            self.membership, self.boot, self.local, self.links, self.settings.request_timeout,
            observe=self.metrics.paths.inc,
            forward_links=self.forward_links)
        self.antientropy = AntiEntropy(self.local, self.links, self.coordinator,
                                       self.settings.antientropy_interval,
                                       on_repair=self.metrics.repairs.inc)
        self.changer = MembershipChanger(self.membership, self.local, self.coordinator,
                                         self._link_for)
        collector = TombstoneCollector(self.membership, self.local, self.links, self.coordinator,
                                       self.settings.tombstone_ttl,
                                       on_purge=self.metrics.tombstones_collected.inc)
        self._tasks = [asyncio.create_task(self._bootstrap(), name="bootstrap"),
                       asyncio.create_task(self._heartbeat(), name="heartbeat"),
                       asyncio.create_task(self._watch_readiness(), name="readiness"),
                       asyncio.create_task(self.coordinator.tick(), name="ticks"),
                       asyncio.create_task(self.antientropy.run(), name="anti-entropy"),
                       asyncio.create_task(collector.run(), name="tombstones")]
        log.info("replica started", extra={
            "node": self.settings.node_id, "incarnation": self.incarnation, "boot": self.boot,
            "members": sorted(self.membership.config.voters), "keys": len(self.local)})

    @property
    def session(self) -> aiohttp.ClientSession:
        """The HTTP client session of this replica's outgoing connections."""
        assert self._session is not None, "the node is not started"
        return self._session

    def _link_voters(self, config: Config) -> None:
        """A link to every voter but us (a change's driver reaches leavers on its own)."""
        assert self._session is not None
        # a dropped link is not closed here: a membership change may still be using it to
        # reach a leaver; its stream closes itself once idle
        for links in (self.links, self.forward_links):
            for peer in set(links) - config.voters:
                del links[peer]
        for peer, url in config.url_map().items():
            if peer != self.settings.node_id:
                self.links[peer] = self._link_for(peer, url)
                self.forward_links[peer] = self._link_for(peer, url, forwarding=True)

    def _link_for(self, peer: str, url: str, *, forwarding: bool = False) -> PeerLink:
        """The link to `peer` at `url`: the voter's link, or a new one (e.g. to a leaver).

        Forwarding links wait for a whole Paxos round at the home, so their timeout is the
        request timeout plus grace, not the peer timeout of acceptor batches.
        """
        assert self._session is not None
        link = (self.forward_links if forwarding else self.links).get(peer)
        if link is not None and link.base_url == url:
            return link
        timeout = self.settings.request_timeout + 2 * FORWARD_GRACE if forwarding \
            else self.settings.peer_timeout
        return PeerLink(peer, url, session=self._session, membership=self.membership,
                        token=self.settings.auth_token, timeout=timeout,
                        observe=None if forwarding else self.metrics.observe_batch,
                        on_down=None if forwarding else partial(self._peer_lost, peer))

    def _peer_lost(self, peer: str) -> None:
        """The voter link to `peer` found it silent (a heartbeat or batch got no answer).

        Changes waiting to be forwarded to it can go another way now; and cut off from a
        peer, maybe from more, we may see others write keys while we are the home, so the
        promises we hold for them would make our one-round-trip accepts fail.
        """
        forward = self.forward_links.get(peer)
        if forward is not None:
            forward.abandon(f"{peer} stopped answering")
        if self.coordinator is not None:
            self.coordinator.forget_promises()

    def _storage_failed(self, exc: BaseException) -> None:
        log.critical("storage failed: exiting so that a restart replays the log",
                     extra={"error": f"{type(exc).__name__}: {exc}",
                            "exit_code": EXIT_STORAGE_FAILED})
        os._exit(EXIT_STORAGE_FAILED)

    def _configuration_changed(self, config: Config) -> None:
        if self._session is not None:
            self._link_voters(config)
        if self.coordinator is not None:
            self.coordinator.forget_promises()

    def _joined(self) -> asyncio.Future[None] | None:
        """Added as a voter: start from nothing and catch up again before being ready."""
        log.info("joined the membership: forgetting any earlier state",
                 extra={"keys": len(self.local)})
        if self.antientropy is not None:
            self.antientropy.synced_with.clear()
        return self.local.forget_all()

    async def stop(self) -> None:
        if self.changer is not None:
            await self.changer.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for link in [*self.links.values(), *self.forward_links.values()]:
            await link.close()
        if self._session is not None:
            await self._session.close()
        await self._committer.close()

    async def _bootstrap(self) -> None:
        """Leave epoch 0: by learning a peer's configuration, or by unanimous bootstrap."""
        while not self.membership.config.initialized:
            proposal = self.membership.config
            if self.settings.node_id in proposal.voters:
                peers = [self.links[p] for p in proposal.voters if p in self.links]
                answers = await asyncio.gather(*(link.heartbeat() for link in peers))
                if all(answers) and self.membership.config == proposal:
                    founders = {link.peer_id: link.incarnation or "" for link in peers}
                    cluster = founding_id({**founders, self.settings.node_id: self.incarnation})
                    adopted = self.membership.adopt(proposal._replace(epoch=1, cluster=cluster))
                    if adopted is not None:
                        # shielded: the commit is shared; a stop that cancels this task
                        # must not cancel it for the others waiting on it
                        await asyncio.shield(adopted)
                    log.info("bootstrapped a new cluster",
                             extra={"members": sorted(proposal.voters), "cluster": cluster})
                    return
            await asyncio.sleep(HEARTBEAT_INTERVAL)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.gather(*(link.heartbeat() for link in self.links.values()))
            for peer, link in self.links.items():
                self.metrics.peer_reachable.labels(peer).set(1 if link.reachable else 0)
            await asyncio.sleep(HEARTBEAT_INTERVAL)

    async def _watch_readiness(self) -> None:
        """Export readiness and log its changes. A task of its own, with no I/O: a heartbeat
        can wait on the disk (a configuration to adopt durably), and a stalled disk is one
        of the changes to report."""
        was = (False, "starting")
        while True:
            now = self.readiness
            if self.coordinator is not None:
                self.coordinator.note_readiness(now[0])
            self.metrics.ready.set(1 if now[0] else 0)
            if now != was:
                log.log(logging.INFO if now[0] else logging.WARNING, "readiness changed",
                        extra={"ready": now[0], "reason": now[1]})
                was = now
            await asyncio.sleep(HEARTBEAT_INTERVAL)

    def reachable(self) -> set[str]:
        """This replica and the peers that take its batches (a peer that refuses them for a
        configuration we cannot take answers, but would not vote: found by testing, a
        replica alone in a configuration was ready while every key request got 503)."""
        return {self.settings.node_id} | {p for p, link in self.links.items()
                                          if link.reachable and link.agrees}

    @property
    def readiness(self) -> tuple[bool, str]:
        """Ready when this replica can serve: identity valid, quorum reachable, caught up."""
        config = self.membership.config
        if not config.initialized:
            return False, ("not initialized: waiting for every replica of the peer list to "
                           "answer (new cluster) or for a peer's configuration")
        if not self.membership.is_voter:
            return False, (f"not a member of the configuration at epoch {config.epoch}: "
                           "waiting to be added")
        if self.membership.stale:
            return False, ("peers know this node id under another incarnation: its data was "
                           "lost; it must be re-added as a new member")
        if self._committer.commit_age() > STORAGE_STALL_SECONDS:
            return False, (f"storage stalled: a commit has waited over "
                           f"{STORAGE_STALL_SECONDS:.0f}s for the disk")
        if not config.is_quorum(self.reachable()):
            return False, "no quorum of members is reachable"
        assert self.antientropy is not None
        synced = {self.settings.node_id} | self.antientropy.synced_with
        # with a quorum of the members before any change under way: the new ones are being
        # filled by its rescan, and comparing with them repairs what the rescan is about to
        # write (a member restarted just before a 1→3 change was not ready until its end)
        if not config._replace(joining=None).is_quorum(synced):
            return False, "catching up: start-up anti-entropy with a quorum not finished"
        return True, "ready"

    @property
    def ready(self) -> bool:
        return self.readiness[0]

    def cluster_info(self) -> dict[str, Any]:
        config = self.membership.config
        urls = config.url_map()
        synced = self.antientropy.synced_with if self.antientropy is not None else set()
        coordinator = self.coordinator
        members = []
        for node in sorted(config.voters):
            link = self.links.get(node)
            standing = coordinator.standing(node) if coordinator is not None else None
            members.append({
                "id": node,
                "url": urls.get(node, ""),
                "reachable": True if link is None else link.reachable,
                "incarnation": self.membership.known_incarnation(node),
                "synced": node == self.settings.node_id or node in synced,
                "settled": standing is not None and standing[0],  # as the home is chosen
            })
        ready, reason = self.readiness
        return {
            "node_id": self.settings.node_id,
            "url": self.settings.advertise_url,
            "incarnation": self.incarnation,
            "cluster_id": config.cluster or None,
            "epoch": config.epoch,
            "home": coordinator.acting_home() if coordinator is not None
            and self.membership.is_voter else None,
            "members": members,
            "quorum": config.quorum_size(),
            "joining": None if config.joining is None else sorted(config.joining),
            "joining_quorum": None if config.joining is None else len(config.joining) // 2 + 1,
            "ready": ready,
            "reason": reason,
            "keys": len(self.local),
        }


def replica_session(listen_host: str) -> aiohttp.ClientSession:
    """The session a replica reaches its peers with, and relays key requests over."""
    # no DNS cache: connections to peers are long-lived, so names are looked up only to
    # reconnect, and then a restarted pod's new address must be found at once (aiohttp's
    # 10 s cache kept peers dialling the old one: 8-13 s of 503s after a pod restart)
    connector = aiohttp.TCPConnector(limit=0, enable_cleanup_closed=True, use_dns_cache=False,
                                     local_addr=_source_address(listen_host))
    # never resending by itself: a relayed write resent after a broken connection applied
    # twice (a compare-and-set that succeeded answered 412)
    return new_session(connector=connector)


def _source_address(listen_host: str) -> tuple[str, int] | None:
    """Bind peer connections to our own address when it is a specific one.

    Replicas on distinct loopback addresses (127.0.0.2, .3, …) can then be partitioned with
    iptables rules on source and destination, as the fault-injection tests do.
    """
    if listen_host in ("", "0.0.0.0", "::", "localhost"):
        return None
    try:
        socket.inet_aton(listen_host)
    except OSError:
        return None
    return (listen_host, 0)
