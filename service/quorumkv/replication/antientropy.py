"""Anti-entropy: compare digests of key buckets with peers and repair through the protocol.

A difference is never fixed by copying a peer's state: the key gets an identity change
through Paxos, whose accept phase writes the value a quorum agrees on to every member. So a
repair can never resurrect or invent a value, whichever side was behind.

Only differences that last are repaired: a key is compared again, at the earliest
SETTLE_SECONDS later and its bucket right before its repair, and repaired only if both sides
still hold the same versions as before. Under load most
differences are writes still on their way to the last replica; repairing those wasted a
Paxos round each (31 keys in a 25 s write load, measured) and, worse, the repair's prepare
could overtake the home's one-round-trip accept on some acceptors and leave that client's
write indeterminate (a 503). A replica that missed writes keeps its versions, so it is
repaired one settle time later.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

from quorumkv.core.ballot import Ballot
from quorumkv.core.changes import Identity
from quorumkv.core.messages import BucketQuery, BucketReply, DigestQuery, DigestReply
from quorumkv.errors import QuorumUnavailable
from quorumkv.replication.coordinator import Coordinator
from quorumkv.replication.digests import bucket_of
from quorumkv.replication.local_acceptor import LocalAcceptor
from quorumkv.replication.transport import PeerLink, PeerUnavailable

log = logging.getLogger("quorumkv.antientropy")

REPAIR_CONCURRENCY = 32
BUCKETS_IN_REPAIR = 4  # compared again and repaired at a time
# Longer than any write that is not stalled takes to reach every replica (p99 ~30-40 ms at
# 64 connections here), short enough that catching up after a restart hardly waits for it.
SETTLE_SECONDS = 1.0

Versions = tuple[Ballot | None, Ballot | None]  # (ours, the peer's)


class AntiEntropy:
    def __init__(
        self,
        local: LocalAcceptor,
        links: dict[str, PeerLink],
        coordinator: Coordinator,
        interval: float,
        on_repair: Callable[[int], None] | None = None,
        settle: float = SETTLE_SECONDS,
    ) -> None:
        self._local = local
        self._links = links
        self._coordinator = coordinator
        self._interval = interval
        self._on_repair = on_repair or (lambda n: None)
        self._settle = settle
        self.synced_with: set[str] = set()  # peers compared with at least once since start

    async def run(self) -> None:
        """Sync with every peer once (start-up catch-up), then with a random peer each period."""
        while True:
            pending = [p for p in self._links if p not in self.synced_with]
            targets = pending or [random.choice(list(self._links))] if self._links else []
            for peer in targets:
                if peer not in self._links:  # no longer a member since the round began
                    continue
                try:
                    await self.sync_with(peer)
                except PeerUnavailable:
                    continue
                except Exception:
                    log.exception("anti-entropy round failed", extra={"peer": peer})
            await asyncio.sleep(0.5 if pending else self._interval)

    async def sync_with(self, peer: str) -> int:
        """Compare every bucket with `peer`, repair the keys whose difference lasts; returns
        how many were repaired."""
        link = self._links[peer]
        theirs = await link.call(DigestQuery())
        assert isinstance(theirs, DigestReply)
        buckets = [b for b, (mine, other) in
                   enumerate(zip(self._local.digests.buckets, theirs.buckets, strict=True))
                   if mine != other]
        first = await self._differences(link, buckets)
        repaired = lasting = 0
        if first:
            await asyncio.sleep(self._settle)
            lasting, repaired = await self._repair_lasting(link, first)
            log.info("anti-entropy compared keys", extra={
                "peer": peer, "differing": len(first), "lasting": lasting,
                "repaired": repaired})
        self.synced_with.add(peer)
        return repaired

    async def _repair_lasting(self, link: PeerLink, first: dict[str, Versions]) -> tuple[int, int]:
        """Compare the buckets of `first` again, each just before repairing its keys that
        still differ as they did; returns how many did, and how many were repaired.

        A restarted replica and its peers compare with each other at the same time, and a
        long repair would otherwise be done by both, key by key in step: 20k stale keys took
        32k repairs. Comparing a bucket again right before its repair sees what the other
        side repaired meanwhile, and taking the buckets in random order splits the work."""
        by_bucket: dict[int, list[str]] = {}
        for key in first:
            by_bucket.setdefault(bucket_of(key), []).append(key)
        order = list(by_bucket)
        random.shuffle(order)
        buckets = asyncio.Semaphore(BUCKETS_IN_REPAIR)
        keys = asyncio.Semaphore(REPAIR_CONCURRENCY)

        async def repair(key: str) -> bool:
            async with keys:
                try:
                    # proposed here, not by the home: a replica back from a restart
                    # refuses the low ballots of the home's one-round-trip accepts (its
                    # promise floor), so only a fresh prepare from here reaches it
                    await self._coordinator.change(key, Identity(), local_only=True)
                except QuorumUnavailable:
                    return False
                self._on_repair(1)
                return True

        async def repair_bucket(bucket: int) -> tuple[int, int]:
            async with buckets:
                again = await self._differences(link, [bucket])
                lasting = [k for k in by_bucket[bucket] if again.get(k) == first[k]]
                done = await asyncio.gather(*(repair(k) for k in lasting))
                return len(lasting), sum(done)

        counts = await asyncio.gather(*(repair_bucket(b) for b in order))
        return sum(c[0] for c in counts), sum(c[1] for c in counts)

    async def _differences(self, link: PeerLink, buckets: list[int]) -> dict[str, Versions]:
        """The keys of `buckets` whose versions differ here and at the peer."""
        differing: dict[str, Versions] = {}
        for bucket in buckets:
            reply = await link.call(BucketQuery(bucket))
            assert isinstance(reply, BucketReply)
            their_versions = dict(reply.entries)
            my_versions = dict(self._local.bucket_versions(bucket))
            for key in their_versions.keys() | my_versions.keys():
                versions = (my_versions.get(key), their_versions.get(key))
                if versions[0] != versions[1]:
                    differing[key] = versions
        return differing
