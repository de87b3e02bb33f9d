"""This replica's acceptor: every key's state in memory, replies only once safe to send.

State changes are applied to memory at once (so messages are judged in arrival order). An
accept is staged for the next group commit and its reply waits for that commit. A promise
stays in memory: the durable promise floor (see `core.acceptor`) covers it, so a prepare
waits only in the rare case that the floor must be raised first. Reads wait if the key has a
staged change, so nothing is ever reported that a crash could still lose.

Tombstones are remembered with the time they appeared, for the collector
(`replication.tombstones`), which has every voter forget them once they are old.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from quorumkv.core import acceptor
from quorumkv.core.acceptor import INITIAL, AcceptorState
from quorumkv.core.ballot import Ballot
from quorumkv.core.messages import Accept, Prepare, Read, Reply, Request
from quorumkv.replication.digests import BUCKETS, Digests, bucket_of
from quorumkv.storage.committer import GroupCommitter

META_FLOOR = "promise_floor"


class LocalAcceptor:
    def __init__(self, committer: GroupCommitter, states: Iterable[tuple[str, AcceptorState]],
                 floor: int) -> None:
        """`floor` is the durable promise floor the storage held at start."""
        self._committer = committer
        self._floor = floor  # highest floor staged
        self._durable_floor = floor  # highest floor known to be on disk
        self._floor_commit: asyncio.Future[None] | None = None
        self._initial = acceptor.restored(INITIAL, floor)
        self._states: dict[str, AcceptorState] = {}
        self._bucket_keys: list[set[str]] = [set() for _ in range(BUCKETS)]
        self.digests = Digests()
        self.tombstones: dict[str, float] = {}  # key -> monotonic time it became one here
        for key, state in states:
            if state.accepted != INITIAL.accepted:  # rows of keys forgotten by older versions
                self._store(key, INITIAL, acceptor.restored(state, floor))

    def __len__(self) -> int:
        return len(self._states)

    def state(self, key: str) -> AcceptorState:
        return self._states.get(key, self._initial)

    def holds(self, key: str) -> bool:
        """Whether this acceptor keeps any state (a promise, a vote) for `key`."""
        return key in self._states

    def seen(self, key: str) -> Ballot:
        """The highest ballot this acceptor knows for `key`: where a new proposal starts."""
        state = self._states.get(key, self._initial)
        return max(state.promised, state.accepted)

    def apply(self, request: Request) -> tuple[Reply, asyncio.Future[None] | None]:
        """Judge `request` now; the reply may be sent once the returned commit is done.

        Synchronous on purpose: a proposer in this process sees its own promise at once, so
        two proposals of this node can never pick the same ballot.
        """
        key = request.key
        state = self._states.get(key, self._initial)
        if isinstance(request, Read):
            return acceptor.report(state), self._committer.durable(key)
        reply: Reply
        if isinstance(request, Prepare):
            new, reply = acceptor.prepare(state, request.ballot)
            if new is state:
                return reply, None
            self._store(key, state, new)
            return reply, self._floor_covering(request.ballot)
        if isinstance(request, Accept):
            new, reply = acceptor.accept(state, request.ballot, request.register,
                                         request.next_promise)
        else:
            new, reply = acceptor.fast_accept(state, request.ballot, request.register,
                                              request.next_promise, request.voters)
        if new is state:
            return reply, None
        self._store(key, state, new)
        return reply, self._committer.stage(key, new)

    def chosen(self, key: str, ballot: Ballot) -> None:
        """Every voter took this replica's fast vote at `ballot`: it is chosen, so it may be
        read like a regular vote (one round trip for reads this replica takes part in).
        Memory only: after a restart it is a fast vote again, which is merely slower."""
        state = self._states.get(key)
        if state is not None and state.fast and state.accepted == ballot:
            self._states[key] = state._replace(fast=frozenset())

    def _floor_covering(self, ballot: Ballot) -> asyncio.Future[None] | None:
        """The commit after which a promise of `ballot` is covered by a durable floor."""
        raised = acceptor.raised_floor(ballot, self._floor)
        if raised is not None:
            return self._raise_floor(raised)
        if ballot.counter >= self._durable_floor:
            return self._floor_commit
        return None

    def _raise_floor(self, floor: int) -> asyncio.Future[None]:
        self._floor = floor
        commit = self._committer.stage_meta(META_FLOOR, str(floor))
        self._floor_commit = commit
        commit.add_done_callback(lambda f: self._floor_durable(floor, f))
        return commit

    def _floor_durable(self, floor: int, commit: asyncio.Future[None]) -> None:
        if not commit.cancelled() and commit.exception() is None:
            self._durable_floor = max(self._durable_floor, floor)

    def _store(self, key: str, old: AcceptorState, new: AcceptorState) -> None:
        if key not in self._states:
            self._bucket_keys[bucket_of(key)].add(key)
        self._states[key] = new
        self.digests.update(key, old.register.version, new.register.version)
        if not acceptor.is_tombstone(new):
            self.tombstones.pop(key, None)
        elif new.register != old.register or key not in self.tombstones:
            self.tombstones.pop(key, None)  # re-inserted: the dict stays oldest first
            self.tombstones[key] = time.monotonic()

    def purge(self, key: str, accepted: Ballot) -> asyncio.Future[None] | None:
        """Forget `key` if it is still the tombstone accepted at `accepted`.

        Returns the commit that makes it durable (the row's removal and the raised floor, in
        one transaction), or None if the key was kept.
        """
        state = self._states.get(key)
        floor = None if state is None else acceptor.purge_floor(state, accepted)
        if state is None or floor is None:
            return None
        if floor > self._floor:
            self._raise_floor(floor)  # staged first: the same commit or an earlier one
        if acceptor.floor_ballot(floor) > self._initial.promised:
            self._initial = acceptor.restored(INITIAL, floor)  # every unknown key, as after
            # a restart: at least as high as the forgotten key's promise
        del self._states[key]
        self._bucket_keys[bucket_of(key)].discard(key)
        self.digests.update(key, state.register.version, None)
        self.tombstones.pop(key, None)
        return self._committer.stage(key, INITIAL)  # no row: the storage deletes it

    def bucket_versions(self, bucket: int) -> list[tuple[str, Ballot | None]]:
        """Every key of a digest bucket with its version, for a detailed comparison."""
        return [(key, self._states[key].register.version) for key in self._bucket_keys[bucket]]

    def keys(self) -> list[str]:
        return list(self._states)

    def forget_all(self) -> asyncio.Future[None] | None:
        """Drop every key's state (durably: each row is deleted).

        Promises need no keeping: the durable floor covers them. Returns the commit to wait
        for, or None when there was nothing to forget.
        """
        commit = None
        for key in list(self._states):
            commit = self._committer.stage(key, INITIAL)
        self._states.clear()
        self._bucket_keys = [set() for _ in range(BUCKETS)]
        self.digests = Digests()
        self.tombstones.clear()
        return commit
