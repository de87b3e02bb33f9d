"""Membership configurations and the quorums they require.

A configuration is numbered (its epoch). During a membership change it is joint: a phase
succeeds only with a majority of the old member set AND a majority of the new one, which is
what keeps every chosen value visible across the change.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple


class Config(NamedTuple):
    epoch: int
    members: frozenset[str]
    joining: frozenset[str] | None = None  # the new member set while a change is joint

    @property
    def voters(self) -> frozenset[str]:
        """Every node whose reply can count toward some quorum."""
        return self.members | (self.joining or frozenset())

    def is_quorum(self, acks: Iterable[str]) -> bool:
        acked = set(acks)
        if not _majority(self.members, acked):
            return False
        return self.joining is None or _majority(self.joining, acked)

    def quorum_size(self) -> int:
        """Replies needed from the (first) member set; what `/v1/cluster` reports."""
        return len(self.members) // 2 + 1

    def tolerated_failures(self) -> int:
        return (len(self.members) - 1) // 2


def _majority(members: frozenset[str], acked: set[str]) -> bool:
    return len(members & acked) * 2 > len(members)
