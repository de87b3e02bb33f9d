"""Change functions: what one client operation does to a register.

CASPaxos applies an arbitrary function to the current value in the accept phase. Each change
here returns the new register and the outcome the client is told; a change whose precondition
fails is an identity change, so even a refused operation is linearized at a point where the
state was observed by a quorum.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from quorumkv.core.ballot import Ballot
from quorumkv.core.register import Register, etag_matches


class Outcome(enum.Enum):
    CREATED = "created"
    REPLACED = "replaced"
    DELETED = "deleted"
    READ = "read"
    NOT_FOUND = "not_found"
    PRECONDITION_FAILED = "precondition_failed"


class Put(NamedTuple):
    value: bytes
    if_match: str | None = None
    create_only: bool = False


class Delete(NamedTuple):
    if_match: str | None = None


class Identity(NamedTuple):
    """A read that must go through the accept phase (write-back), or a repair."""


Single = Put | Delete | Identity


class Batch(NamedTuple):
    """Changes of one key that queued at the home while a proposal for the key was in flight,
    proposed as one change: applied in turn, each told its own outcome.

    This is how writes to a hot key share a Paxos round, as a leader's log puts many writes
    in one append. Each change is linearized where the round's value is chosen, in batch
    order. A state inside the batch, overwritten by a later change of it, is never stored;
    the change that made it is still told a version of its own (`inner_version`), so an
    `If-Match` with its ETag fails as it should: that value is already gone.
    """

    changes: tuple[Single, ...]


class Folded(NamedTuple):
    """What each change of a `Batch` is told, in order: (register, outcome)."""

    results: tuple[tuple[Register, Outcome], ...]


Change = Single | Batch


def apply_change(change: Change, current: Register,
                 ballot: Ballot) -> tuple[Register, Outcome | Folded]:
    """Apply `change` to `current` under proposal `ballot`; pure."""
    if isinstance(change, Batch):
        return apply_batch(change, current, ballot)
    return apply_single(change, current, ballot)


def apply_batch(batch: Batch, current: Register, ballot: Ballot) -> tuple[Register, Folded]:
    """The batch's final register (what the acceptors store, at `ballot`) and each change's
    result. States the batch overwrites carry `inner_version`s."""
    results: list[tuple[Register, Outcome]] = []
    state = current
    for index, change in enumerate(batch.changes):
        state, outcome = apply_single(change, state, inner_version(ballot, index))
        results.append((state, outcome))
    if state.version is None or state.version.boot >= 0:
        return state, Folded(tuple(results))  # the batch wrote nothing
    inner, final = state.version, state._replace(version=ballot)
    return final, Folded(tuple((final if register.version == inner else register, outcome)
                               for register, outcome in results))


def inner_version(ballot: Ballot, index: int) -> Ballot:
    """The version of the state the `index`th change of a batch proposed at `ballot` made.

    Unique (one proposal per ballot) and never any replica's ballot: boots are never
    negative. Only the last state of a batch is stored, and it gets `ballot` itself.
    """
    return Ballot(ballot.counter, ballot.node, -1 - index)


def apply_single(change: Single, current: Register, ballot: Ballot) -> tuple[Register, Outcome]:
    """Apply one client operation (or an identity change) to `current` at version `ballot`."""
    if isinstance(change, Identity):
        return current, Outcome.READ if current.exists else Outcome.NOT_FOUND
    if change.if_match is not None and not etag_matches(change.if_match, current):
        return current, Outcome.PRECONDITION_FAILED
    if isinstance(change, Put):
        if change.create_only and current.exists:
            return current, Outcome.PRECONDITION_FAILED
        outcome = Outcome.REPLACED if current.exists else Outcome.CREATED
        return Register(change.value, ballot), outcome
    if not current.exists:
        return current, Outcome.NOT_FOUND
    return Register(None, ballot), Outcome.DELETED
