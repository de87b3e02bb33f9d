"""Paxos ballots.

A ballot is `(counter, node, boot)`, compared as a tuple. `node` makes ballots of different
proposers distinct; `boot` is a durable counter bumped at every start of a replica, so a
proposer that crashed after sending an accept can never reuse the same ballot with another
value after it comes back (the counter itself is only kept in memory).
"""

from __future__ import annotations

from typing import NamedTuple


class Ballot(NamedTuple):
    counter: int
    node: str
    boot: int

    def next(self, node: str, boot: int) -> Ballot:
        """The smallest ballot of proposer `(node, boot)` that is greater than this one."""
        candidate = Ballot(self.counter, node, boot)
        if candidate > self:
            return candidate
        return Ballot(self.counter + 1, node, boot)

    def to_wire(self) -> tuple[int, str, int]:
        return (self.counter, self.node, self.boot)

    @classmethod
    def from_wire(cls, raw: object) -> Ballot:
        """Every peer message carries two or three ballots, so this is written for speed:
        exact types (what msgpack decodes), checked in one expression."""
        if type(raw) is list and len(raw) == 3:
            counter, node, boot = raw
            if type(counter) is int and type(node) is str and type(boot) is int:
                return tuple.__new__(cls, raw)
        raise ValueError(f"not a ballot: {raw!r}")


ZERO = Ballot(0, "", 0)
