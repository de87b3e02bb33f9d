"""This replica's acceptor: every key's state in memory, replies only once durable.

State changes are applied to memory at once (so messages are judged in arrival order) and
staged for the next group commit; the reply waits for that commit. Reads wait too if the key
has a staged change, so nothing is ever reported that a crash could still lose.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from quorumkv.core import acceptor
from quorumkv.core.acceptor import INITIAL, AcceptorState, Promise
from quorumkv.core.ballot import Ballot
from quorumkv.core.messages import Prepare, Read, Reply, Request
from quorumkv.replication.digests import BUCKETS, Digests, bucket_of
from quorumkv.storage.committer import GroupCommitter


class LocalAcceptor:
    def __init__(self, committer: GroupCommitter, states: Iterable[tuple[str, AcceptorState]]):
        self._committer = committer
        self._states: dict[str, AcceptorState] = {}
        self._bucket_keys: list[set[str]] = [set() for _ in range(BUCKETS)]
        self.digests = Digests()
        for key, state in states:
            self._store(key, INITIAL, state)

    def __len__(self) -> int:
        return len(self._states)

    def state(self, key: str) -> AcceptorState:
        return self._states.get(key, INITIAL)

    def seen(self, key: str) -> Ballot:
        """The highest ballot this acceptor knows for `key`: where a new proposal starts."""
        state = self._states.get(key, INITIAL)
        return max(state.promised, state.accepted)

    async def handle(self, request: Request) -> Reply:
        reply, durable = self.apply(request)
        if durable is not None:
            await asyncio.shield(durable)
        return reply

    def apply(self, request: Request) -> tuple[Reply, asyncio.Future[None] | None]:
        """Judge `request` now; the reply may be sent once the returned commit is done.

        Synchronous on purpose: a proposer in this process sees its own promise at once, so
        two proposals of this node can never pick the same ballot.
        """
        key = request.key
        state = self._states.get(key, INITIAL)
        if isinstance(request, Read):
            return Promise(state.accepted, state.register), self._committer.durable(key)
        reply: Reply
        if isinstance(request, Prepare):
            new, reply = acceptor.prepare(state, request.ballot)
        else:
            new, reply = acceptor.accept(state, request.ballot, request.register,
                                         request.next_promise)
        if new is state:
            return reply, None
        self._store(key, state, new)
        return reply, self._committer.stage(key, new)

    def _store(self, key: str, old: AcceptorState, new: AcceptorState) -> None:
        if key not in self._states:
            self._bucket_keys[bucket_of(key)].add(key)
        self._states[key] = new
        self.digests.update(key, old.register.version, new.register.version)

    def bucket_versions(self, bucket: int) -> list[tuple[str, Ballot | None]]:
        """Every key of a digest bucket with its version, for a detailed comparison."""
        return [(key, self._states[key].register.version) for key in self._bucket_keys[bucket]]

    def keys(self) -> list[str]:
        return list(self._states)
