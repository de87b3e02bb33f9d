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
        if not (isinstance(raw, list | tuple) and len(raw) == 3):
            raise ValueError(f"not a ballot: {raw!r}")
        counter, node, boot = raw
        if not (isinstance(counter, int) and isinstance(node, str) and isinstance(boot, int)):
            raise ValueError(f"not a ballot: {raw!r}")
        return cls(counter, node, boot)


ZERO = Ballot(0, "", 0)
