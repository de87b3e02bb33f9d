"""The acceptor's rules for one key, as pure functions.

Replies are sent only after the new state is durable (the caller's job); these functions only
decide. The one-round-trip optimisation of CASPaxos is built in: an accept may carry the
promise for the proposer's next ballot, so that proposer's next change to the key can skip
the prepare phase.

Promises made by a prepare are kept in memory only, so a prepare costs no fsync. What makes
that safe is the promise floor: a durable counter above every promise this acceptor ever made.
A prepare at or above the floor raises it durably first (rarely: by a large step). After a
restart every key counts as promised at the floor, so the acceptor refuses every ballot it
might have promised to refuse before it crashed.

Fast creates (`fast_accept`) are Fast Paxos rounds for keys nobody has written: an acceptor
votes for a value without a prepare, but only if it holds no vote for the key at all, and
such a *fast vote* is chosen only once every voter of its configuration cast it (it carries
their names). `core.proposer.choose` adopts a fast vote in a later prepare only when every
replier among those voters holds it.
"""

from __future__ import annotations

from typing import NamedTuple

from quorumkv.core.ballot import ZERO, Ballot
from quorumkv.core.register import EMPTY, Register


class AcceptorState(NamedTuple):
    promised: Ballot
    accepted: Ballot
    register: Register
    fast: frozenset[str] = frozenset()  # a fast vote: the voters who all had to cast it


INITIAL = AcceptorState(ZERO, ZERO, EMPTY)
FLOOR_STEP = 1 << 16  # how far a promise floor is raised at a time


def floor_ballot(floor: int) -> Ballot:
    """The lowest ballot an acceptor restarted with `floor` may still promise or accept."""
    return Ballot(floor, "", 0)


def restored(state: AcceptorState, floor: int) -> AcceptorState:
    """A key's state as reloaded after a restart: its in-memory promise is replaced by the
    floor, which is at least as high as any promise that was lost."""
    if state.promised >= floor_ballot(floor):
        return state
    return state._replace(promised=floor_ballot(floor))


def raised_floor(ballot: Ballot, floor: int) -> int | None:
    """The new floor to make durable before promising `ballot`, or None if it is below it."""
    return ballot.counter + FLOOR_STEP if ballot.counter >= floor else None


class Promise(NamedTuple):
    accepted: Ballot
    register: Register
    fast: frozenset[str] = frozenset()  # see `AcceptorState.fast`


def report(state: AcceptorState) -> Promise:
    """What a prepare or a read is told about the state."""
    return Promise(state.accepted, state.register, state.fast)


class Accepted(NamedTuple):
    pass


class Conflict(NamedTuple):
    """The ballot was too low; `seen` is the highest ballot this acceptor knows."""

    seen: Ballot


PrepareReply = Promise | Conflict
AcceptReply = Accepted | Conflict


def prepare(state: AcceptorState, ballot: Ballot) -> tuple[AcceptorState, PrepareReply]:
    if ballot <= state.promised or ballot <= state.accepted:
        return state, Conflict(max(state.promised, state.accepted))
    return state._replace(promised=ballot), report(state)


def accept(
    state: AcceptorState, ballot: Ballot, register: Register, next_promise: Ballot | None
) -> tuple[AcceptorState, AcceptReply]:
    """Accept `register` at `ballot` unless a higher ballot was promised or accepted.

    `ballot == promised` is the normal case (promised by the prepare, or piggy-backed on the
    proposer's previous accept).
    """
    if ballot < state.promised or ballot <= state.accepted:
        return state, Conflict(max(state.promised, state.accepted))
    promised = ballot if next_promise is None or next_promise <= ballot else next_promise
    return AcceptorState(promised, ballot, register), Accepted()


def fast_accept(
    state: AcceptorState, ballot: Ballot, register: Register, next_promise: Ballot | None,
    voters: frozenset[str],
) -> tuple[AcceptorState, AcceptReply]:
    """A fast vote for `register` at `ballot`: only from an acceptor with no vote for the key.

    Holding no vote is what a prepare would have reported, so the vote is the prepare and
    the accept in one step, on this acceptor. It is not the classic guarantee (the proposer
    has not seen a quorum empty first), which is why a fast vote counts as chosen only when
    every voter cast it, and why `Conflict` here may also mean "I hold a vote".
    """
    if state.accepted != ZERO or ballot < state.promised:
        return state, Conflict(max(state.promised, state.accepted))
    promised = ballot if next_promise is None or next_promise <= ballot else next_promise
    return AcceptorState(promised, ballot, register, voters), Accepted()


def is_tombstone(state: AcceptorState | Promise) -> bool:
    """Holds no value but has accepted something: a deleted key (or, rarely, "absent"
    written back by a read after a purge). Either can be collected."""
    return not state.register.exists and state.accepted != ZERO


def purge_floor(state: AcceptorState, accepted: Ballot) -> int | None:
    """The promise floor that forgetting this tombstone needs, or None to keep the key.

    The collector asks for a purge only once every voter has accepted the tombstone at exactly
    `accepted` (so no voter will ever accept a lower ballot for the key, and every later value
    derives from "absent"). An acceptor that has moved on since keeps the key. One that
    forgets it must still refuse everything it promised to refuse: a durable floor above the
    key's promise and accepted ballot does that, as after a restart.
    """
    if state.accepted != accepted or not is_tombstone(state):
        return None
    return max(state.promised.counter, state.accepted.counter) + 1
