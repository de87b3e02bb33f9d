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


Change = Put | Delete | Identity


def apply_change(change: Change, current: Register, ballot: Ballot) -> tuple[Register, Outcome]:
    """Apply `change` to `current` under proposal `ballot`; pure."""
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
