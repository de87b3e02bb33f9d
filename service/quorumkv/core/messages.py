"""Messages between proposers and acceptors, independent of how they travel."""

from __future__ import annotations

from typing import NamedTuple

from quorumkv.core.acceptor import Accepted, Conflict, Promise
from quorumkv.core.ballot import Ballot
from quorumkv.core.changes import Outcome, Single
from quorumkv.core.register import Register


class Read(NamedTuple):
    """Ask for the accepted state, without promising anything (the fast read path).

    `known`: the accepted ballot the asker holds itself. A peer that holds the same answers
    `Unchanged` instead of sending the register back: one value per ballot, so the asker
    already has it (digest reads, as Cassandra's: values cross the network once).
    """

    key: str
    known: Ballot | None = None


class Unchanged(NamedTuple):
    """The answer to a `Read`: the accepted state is the `known` one of the request."""


class Prepare(NamedTuple):
    key: str
    ballot: Ballot


class Accept(NamedTuple):
    key: str
    ballot: Ballot
    register: Register
    next_promise: Ballot | None


class FastAccept(NamedTuple):
    """A create's fast round: vote for `register` at `ballot` if you hold no vote for `key`
    (`core.acceptor.fast_accept`). Chosen only when all of `voters` (every voter of the
    proposer's configuration) accept it."""

    key: str
    ballot: Ballot
    register: Register
    next_promise: Ballot | None
    voters: frozenset[str]


Request = Read | Prepare | Accept | FastAccept
# A read is answered like a promise: the accepted ballot and register, durable.
Reply = Promise | Accepted | Conflict


class DigestQuery(NamedTuple):
    """Anti-entropy: ask for the digest of every key bucket."""


class BucketQuery(NamedTuple):
    """Anti-entropy: ask for `(key, version)` of every key in one bucket."""

    bucket: int


class DigestReply(NamedTuple):
    buckets: tuple[int, ...]


class BucketReply(NamedTuple):
    entries: tuple[tuple[str, Ballot | None], ...]


SyncQuery = DigestQuery | BucketQuery
SyncReply = DigestReply | BucketReply


class Purge(NamedTuple):
    """Tombstone collection: forget `key` if its accepted state is the tombstone accepted at
    `accepted` (every voter had it when the collector checked)."""

    key: str
    accepted: Ballot


class PurgeReply(NamedTuple):
    purged: bool


class Forward(NamedTuple):
    """Ask the home replica to run a change: one proposer, no duels."""

    key: str
    change: Single  # a batch is formed at the home, never forwarded
    # Wall-clock time (seconds since the epoch) after which the home must not start the
    # change: the forwarder has answered its client by then. None from a forwarder whose
    # home speaks a protocol without it.
    expires: float | None = None


class Forwarded(NamedTuple):
    outcome: Outcome
    register: Register


class ForwardFailed(NamedTuple):
    """The home could not get a quorum; `indeterminate`: the change may still happen."""

    detail: str
    indeterminate: bool
