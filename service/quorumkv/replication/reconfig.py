"""Drives a membership change on this replica: install joint, rescan, install the new set.

The steps come from the pure resolver `core.reconfig.next_step`, asked again after each one,
so a change interrupted anywhere (this replica killed, the operator restarted) is finished by
requesting the same target again, from any replica that stays a member.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from quorumkv.core import reconfig
from quorumkv.core.changes import Identity
from quorumkv.core.messages import BucketQuery, BucketReply
from quorumkv.core.quorum import Config
from quorumkv.errors import QuorumUnavailable
from quorumkv.replication.coordinator import Coordinator
from quorumkv.replication.digests import BUCKETS
from quorumkv.replication.local_acceptor import LocalAcceptor
from quorumkv.replication.membership import Membership
from quorumkv.replication.transport import PeerLink, PeerRefused, PeerUnavailable

log = logging.getLogger("quorumkv.reconfig")

INSTALL_TIMEOUT = 60.0
CHECK_TIMEOUT = 2.0  # for a new member to answer before a change starts
RESCAN_CONCURRENCY = 64
KEY_ATTEMPTS = 10  # per key, with backoff capped at 2 s: rides out a few seconds at the
# minimum majority (a paused member, a restart) instead of failing the whole change


class ChangeRefused(Exception):
    """The change cannot be made (now): another one is running, or it asks the impossible."""


async def _answers(link: PeerLink, member: bool) -> bool:
    """Whether the peer is up: it answers an empty batch. More patient than a heartbeat: a
    replica just started may be slow to accept a connection.

    A `member` may refuse the batch (it has moved on, say): it is up. A new member must take
    it: one that has not joined adopts our configuration, and so does a replica removed from
    this cluster earlier. One that refuses knows a configuration we cannot take (newer than
    ours, or of another cluster): it is a replica of another cluster, or we are behind.
    Adding it would hand its configuration to our members, or count on a vote we never get.
    """
    try:
        await link.exchange([], timeout=CHECK_TIMEOUT)
    except PeerRefused as exc:
        if member:
            return True
        raise ChangeRefused(f"{link.peer_id} at {link.base_url} refuses this cluster's "
                            f"configuration: it belongs to another cluster, or this replica "
                            f"is behind ({exc})") from None
    except PeerUnavailable:
        return False
    return True


@dataclasses.dataclass
class Progress:
    """What `GET /internal/v1/membership` reports about the change under way or last made."""

    target: dict[str, str]
    state: str = "starting"  # installing-joint | rescanning | installing-new | done | failed
    epoch: int = 0
    rescanned: int = 0
    total: int = 0
    error: str = ""
    started: float = dataclasses.field(default_factory=time.time)
    finished: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "members": sorted(self.target)}


LinkFactory = Callable[[str, str], PeerLink]


class MembershipChanger:
    def __init__(self, membership: Membership, local: LocalAcceptor, coordinator: Coordinator,
                 link_for: LinkFactory) -> None:
        self._membership = membership
        self._local = local
        self._coordinator = coordinator
        self._link_for = link_for
        self.progress: Progress | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def request(self, target: Mapping[str, str]) -> Progress:
        """Start (or keep running, or report) the change to member set `target`."""
        target = dict(target)
        if self._membership.node_id not in target:
            raise ChangeRefused("ask a replica that stays a member to drive the change")
        if self.running:
            return self._running(target)
        config = self._membership.config
        step = reconfig.next_step(config, target, rescanned=False)
        if isinstance(step, reconfig.Refused):
            raise ChangeRefused(step.reason)
        if isinstance(step, reconfig.Install) and step.config.is_joint:
            await self._check_answering(target)
            if self.running:  # the same request, asked again while we checked
                return self._running(target)
            if self._membership.config != config:
                raise ChangeRefused("the configuration changed meanwhile; ask again")
        self.progress = Progress(target, epoch=config.epoch)
        self._task = asyncio.create_task(self._run(self.progress), name="membership-change")
        return self.progress

    def _running(self, target: Mapping[str, str]) -> Progress:
        """The change under way, if it is the one asked for."""
        assert self.progress is not None
        if self.progress.target != target:
            raise ChangeRefused(f"a change to {sorted(self.progress.target)} is running")
        return self.progress

    async def _check_answering(self, target: Mapping[str, str]) -> None:
        """Refuse to start a change whose new member set has no majority up: its joint
        configuration, once installed, would stop every write and read until they come,
        and a change under way has no way back (`core.reconfig`)."""
        me = self._membership.node_id
        members = self._membership.config.voters
        links = {node: self._link_for(node, url) for node, url in target.items() if node != me}
        answers = await asyncio.gather(*(_answers(link, node in members)
                                         for node, link in links.items()))
        answering = {me} | {node for node, ok in zip(links, answers, strict=True) if ok}
        if len(answering) * 2 <= len(target):
            silent = sorted(set(target) - answering)
            raise ChangeRefused(f"{silent} of the new member set do not answer; start them "
                                "first: a majority of the new set must be up")
        # two ids at one replica's URL would be two votes of one process (found by testing)
        seen = {self._membership.incarnation: me}
        for node in sorted(answering - {me}):
            incarnation = links[node].incarnation
            if incarnation is None:
                continue
            if incarnation in seen:
                raise ChangeRefused(f"{node} at {target[node]} is the same replica as "
                                    f"{seen[incarnation]} (incarnation {incarnation})")
            seen[incarnation] = node

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self, progress: Progress) -> None:
        log.info("membership change started", extra={
            "from": sorted(self._membership.config.members), "to": sorted(progress.target)})
        rescanned_at = -1  # the joint epoch whose rescan this driver finished
        try:
            while True:
                config = self._membership.config
                if config.epoch != progress.epoch:  # what this driver last saw or installed
                    # Someone else carried the change on, or made others since (this driver
                    # was paused, say): acting on would undo them, and a rescan done under
                    # an older joint configuration covers no newer one.
                    raise ChangeRefused(f"the configuration moved on to epoch {config.epoch} "
                                        f"while this change was at epoch {progress.epoch}")
                step = reconfig.next_step(config, progress.target,
                                          rescanned=rescanned_at == config.epoch)
                if isinstance(step, reconfig.Done):
                    progress.state, progress.epoch = "done", step.config.epoch
                    break
                if isinstance(step, reconfig.Refused):
                    raise ChangeRefused(step.reason)
                if isinstance(step, reconfig.Install):
                    progress.state = "installing-joint" if step.config.is_joint \
                        else "installing-new"
                    await self._install(step.config)
                    progress.epoch = step.config.epoch
                else:
                    progress.state = "rescanning"
                    await self._rescan(progress)
                    rescanned_at = config.epoch
        except Exception as exc:
            progress.state, progress.error = "failed", f"{type(exc).__name__}: {exc}"
            log.warning("membership change failed", extra={"error": progress.error})
        else:
            log.info("membership change done", extra={
                "epoch": progress.epoch, "members": sorted(progress.target),
                "seconds": round(time.time() - progress.started, 2)})
        progress.finished = time.time()

    async def _install(self, new: Config) -> None:
        """Adopt `new` here, then until its installing quorum has it durably."""
        old = self._membership.config
        urls = {**old.url_map(), **new.url_map()}
        adopted = self._membership.adopt(new)
        if adopted is not None:
            await asyncio.shield(adopted)  # the commit is shared with other waiters
        quorum = reconfig.installing_quorum(new, old)
        me = self._membership.node_id
        links = {node: self._link_for(node, urls[node]) for node in (old.voters | new.voters)
                 if node != me}
        acked = {me}
        deadline = time.monotonic() + INSTALL_TIMEOUT
        while not quorum.is_quorum(acked):
            if time.monotonic() > deadline:
                raise QuorumUnavailable(f"epoch {new.epoch} was not acknowledged by a quorum "
                                        f"in {INSTALL_TIMEOUT:.0f}s (have {sorted(acked)})")
            pending = [n for n in links if n not in acked]
            results = await asyncio.gather(*(links[n].exchange([], new) for n in pending),
                                           return_exceptions=True)
            acked |= {n for n, r in zip(pending, results, strict=True)
                      if not isinstance(r, BaseException)}
            if not quorum.is_quorum(acked):
                await asyncio.sleep(0.5)
        log.info("configuration installed", extra={"epoch": new.epoch, "acked": sorted(acked)})

    async def _rescan(self, progress: Progress) -> None:
        """Re-propose every key under the joint configuration.

        The keys are collected from a majority of the old members: every chosen value was
        accepted by such a majority, so at least one of them knows the key.
        """
        config = self._membership.config
        keys = await self._collect_keys(config)
        progress.total, progress.rescanned = len(keys), 0
        log.info("rescan started", extra={"keys": len(keys), "epoch": config.epoch})
        queue = iter(sorted(keys))

        async def worker() -> None:
            for key in queue:
                await self._repropose(key)
                progress.rescanned += 1

        await asyncio.gather(*(worker() for _ in range(RESCAN_CONCURRENCY)))

    async def _collect_keys(self, config: Config) -> set[str]:
        me = self._membership.node_id
        keys: set[str] = set(self._local.keys()) if me in config.members else set()
        answered = {me} & config.members
        urls = config.url_map()
        for node in sorted(config.members - {me}):
            link = self._link_for(node, urls[node])
            try:
                replies = await asyncio.gather(*(link.call(BucketQuery(b), config)
                                                 for b in range(BUCKETS)))
            except PeerUnavailable:
                continue
            for reply in replies:
                assert isinstance(reply, BucketReply)
                keys.update(key for key, _ in reply.entries)
            answered.add(node)
        if len(answered) * 2 <= len(config.members):
            raise QuorumUnavailable(f"only {sorted(answered)} of the old members listed their "
                                    "keys; a majority is needed")
        return keys

    async def _repropose(self, key: str) -> None:
        for attempt in range(KEY_ATTEMPTS):
            try:
                await self._coordinator.change(key, Identity())
                return
            except QuorumUnavailable:
                if attempt == KEY_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(min(2.0, 0.2 * 2 ** attempt))
