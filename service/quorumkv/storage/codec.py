"""Compact binary encoding of acceptor states, shared by storage and the peer protocol."""

from __future__ import annotations

from typing import Any

from quorumkv.core.acceptor import AcceptorState
from quorumkv.core.ballot import Ballot
from quorumkv.core.register import Register


def ballot_or_none(raw: Any) -> Ballot | None:
    return None if raw is None else Ballot.from_wire(raw)


def register_to_wire(register: Register) -> list[Any]:
    version = None if register.version is None else register.version.to_wire()
    return [register.value, version]


def register_from_wire(raw: Any) -> Register:
    if not (type(raw) is list and len(raw) == 2):
        raise ValueError(f"not a register: {raw!r}")
    value, version = raw
    if value is not None and type(value) is not bytes:
        raise ValueError("register value must be bytes or null")
    return Register(value, ballot_or_none(version))


def state_to_row(state: AcceptorState) -> tuple[list[Any], bytes | None]:
    """The state's small fields (a fourth, its voters, only for a fast vote) and its value."""
    version = state.register.version
    small: list[Any] = [state.promised.to_wire(), state.accepted.to_wire(),
                        None if version is None else version.to_wire()]
    if state.fast:
        small.append(sorted(state.fast))
    return small, state.register.value


def state_from_row(small: list[Any], value: bytes | None) -> AcceptorState:
    promised, accepted, version, *fast = small
    return AcceptorState(Ballot.from_wire(promised), Ballot.from_wire(accepted),
                         Register(value, ballot_or_none(version)),
                         voter_set(fast[0]) if fast else frozenset())


_voter_sets: dict[tuple[str, ...], frozenset[str]] = {}


def voter_set(raw: Any) -> frozenset[str]:
    """The voters of a fast vote, shared between all votes of one configuration."""
    if not (isinstance(raw, list) and raw and all(isinstance(n, str) for n in raw)):
        raise ValueError(f"not a voter list: {raw!r}")
    names = tuple(raw)
    found = _voter_sets.get(names)
    if found is None:
        found = _voter_sets[names] = frozenset(names)
        if len(_voter_sets) > 64:  # configurations are few; never let a peer grow this
            _voter_sets.clear()
    return found
