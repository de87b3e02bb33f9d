"""Tombstone collection: a deleted key is forgotten by every voter once it is old.

A delete leaves a tombstone (the register without a value) so that Paxos can order it; kept
forever, tombstones would grow memory and disk without bound under create/delete churn. The home
replica (`quorumkv.placement`) collects them, in two steps:

1. read the key from every voter (not a quorum): each must hold the very tombstone, accepted
   at the same ballot. From then on no voter accepts a lower ballot for the key, so no
   delayed message can bring an older value back;
2. ask every voter to purge it. A voter forgets the key only if it still holds exactly that
   tombstone, and raises its promise floor above the key's ballots in the same commit, so it
   keeps refusing whatever it promised to refuse (see `core.acceptor.purge_floor`).

A voter that has forgotten the key answers like one that never saw it ("absent"), which is
what the tombstone meant, so any mix of purged and unpurged voters reads the same. A purge
that reaches only some voters leaves digests that differ; anti-entropy then writes the
tombstone back, and the next round collects it again. Nothing is collected while a voter is
unreachable or the membership is changing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from quorumkv.core.acceptor import Promise, is_tombstone
from quorumkv.core.ballot import Ballot
from quorumkv.core.messages import Purge, PurgeReply, Read
from quorumkv.replication.coordinator import Coordinator
from quorumkv.replication.local_acceptor import LocalAcceptor
from quorumkv.replication.membership import Membership
from quorumkv.replication.transport import PeerLink
from quorumkv.replication.wire import PeerReply

log = logging.getLogger("quorumkv.tombstones")

MAX_KEYS_PER_ROUND = 1000


class TombstoneCollector:
    def __init__(
        self,
        membership: Membership,
        local: LocalAcceptor,
        links: dict[str, PeerLink],
        coordinator: Coordinator,
        ttl: float,
        on_purge: Callable[[int], None] | None = None,
    ) -> None:
        self._membership = membership
        self._local = local
        self._links = links
        self._coordinator = coordinator
        self._ttl = ttl
        self._on_purge = on_purge or (lambda n: None)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(max(0.1, min(self._ttl / 2, 10.0)))
            try:
                while await self.collect() == MAX_KEYS_PER_ROUND:
                    pass  # a full round all purged: more may be due (deletes faster than rounds)
            except Exception:
                log.exception("tombstone collection round failed")

    def _due(self) -> list[str]:
        """Old tombstones, oldest first, if this replica is the home."""
        if self._coordinator.home() != self._membership.node_id:
            return []
        horizon = time.monotonic() - self._ttl
        due: list[str] = []
        for key, since in self._local.tombstones.items():  # insertion order: oldest first
            if since > horizon or len(due) >= MAX_KEYS_PER_ROUND:
                break
            due.append(key)
        return due

    async def collect(self) -> int:
        """One round; returns how many keys every voter purged."""
        config = self._membership.config
        if not config.initialized or not self._membership.is_voter \
                or config.joining is not None:
            return 0
        links = [self._links.get(p) for p in config.voters - {self._membership.node_id}]
        peers = [link for link in links if link is not None and link.reachable]
        if len(peers) != len(links):
            return 0
        due = self._due()
        if not due:
            return 0
        agreed = await self._held_by_every_voter(due, peers)
        if self._membership.config != config:
            return 0
        purged = await self._purge(agreed, peers)
        if agreed:
            log.info("tombstones collected", extra={"checked": len(due), "agreed": len(agreed),
                                                     "purged": purged})
        self._on_purge(purged)
        return purged

    async def _held_by_every_voter(self, keys: list[str],
                                   peers: list[PeerLink]) -> dict[str, Ballot]:
        """The keys whose tombstone every voter has accepted at the same ballot."""
        mine: dict[str, Ballot] = {}
        local_commits = []
        for key in keys:
            reply, durable = self._local.apply(Read(key))
            if isinstance(reply, Promise) and is_tombstone(reply):
                mine[key] = reply.accepted
                if durable is not None:  # ours counts only once it is on disk, as theirs
                    local_commits.append(durable)
        answers = await _ask_every_peer(peers, [Read(key) for key in mine])
        if local_commits:
            await asyncio.gather(*(asyncio.shield(c) for c in local_commits))
        # one value per ballot: the same accepted ballot is the same tombstone
        return {key: accepted
                for (key, accepted), theirs in zip(mine.items(), answers, strict=True)
                if all(isinstance(a, Promise) and a.accepted == accepted for a in theirs)}

    async def _purge(self, keys: dict[str, Ballot], peers: list[PeerLink]) -> int:
        """Purge on every peer, then here; returns how many keys every voter forgot."""
        answers = await _ask_every_peer(peers, [Purge(k, a) for k, a in keys.items()])
        everywhere = 0
        commits = []
        for (key, accepted), theirs in zip(keys.items(), answers, strict=True):
            commit = self._local.purge(key, accepted)
            if commit is None:
                continue
            commits.append(commit)
            everywhere += all(isinstance(a, PurgeReply) and a.purged for a in theirs)
        if commits:
            await asyncio.shield(commits[-1])  # one batch, or earlier ones before it
        return everywhere


async def _ask_every_peer(peers: list[PeerLink],
                          messages: list[Read] | list[Purge],
                          ) -> list[list[PeerReply | BaseException]]:
    """For each message, every peer's answer (an exception if it gave none)."""
    results = await asyncio.gather(*(link.call(m) for link in peers for m in messages),
                                   return_exceptions=True)
    return [results[i::len(messages)] for i in range(len(messages))]
