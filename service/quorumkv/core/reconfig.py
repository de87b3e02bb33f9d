"""The steps of a membership change, decided by pure code from where the cluster is now.

Going from member set A to B: epoch e+1 = joint(A, B); a rescan re-proposes every key under
joint quorums so the latest value of each is on a majority of B; epoch e+2 = B alone. One
change at a time. The resolver looks only at the current configuration (and whether the
rescan finished), so a driver that crashed at any point resumes by asking it again.

There is no way back from a joint configuration but forward: abandoning it (the old set
alone at epoch e+2) would race the change's own end at the same epoch, and replicas act on
a configuration as soon as they adopt it, so each side could serve on its own (measured:
two 201s for one create). That is why a change starts only with a majority of the new set
up (`replication/reconfig.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from quorumkv.core.quorum import Config, make_config


class Install(NamedTuple):
    """Make `config` durable on its quorum (majority of old and of new members)."""

    config: Config


class Rescan(NamedTuple):
    """Re-propose every key under the current (joint) configuration."""


class Done(NamedTuple):
    config: Config


class Refused(NamedTuple):
    reason: str


Step = Install | Rescan | Done | Refused


def next_step(current: Config, target: Mapping[str, str], rescanned: bool) -> Step:
    """What to do next to reach member set `target` (node -> URL) from `current`."""
    members = frozenset(target)
    if not members:
        return Refused("the new member set is empty")
    if not current.initialized:
        return Refused("this replica has not joined a cluster yet")
    if not current.is_joint:
        moved = sorted(n for n in members & current.members
                       if target[n] != current.url_map()[n])
        if moved:
            return Refused(f"member(s) {moved} have another URL in the configuration; a "
                           "member's URL cannot be changed: remove it, then add it back")
        if current.members == members:
            return Done(current)
        urls = {**current.url_map(), **target}
        added = {node: current.epoch + 1 for node in members - current.members}
        return Install(make_config(current.epoch + 1, current.members, members, urls,
                                   {**current.joined_map(), **added}, current.cluster))
    if current.joining != members:
        return Refused(f"another change is in progress: {sorted(current.members)} -> "
                       f"{sorted(current.joining or ())} at epoch {current.epoch}; finish it "
                       "by asking for its new set")
    if not rescanned:
        return Rescan()
    return Install(make_config(current.epoch + 1, members, None, current.url_map(),
                               current.joined_map(), current.cluster))


def installing_quorum(new: Config, old: Config) -> Config:
    """Whose acknowledgements make `new` durable enough to act on.

    Entering a joint configuration: a majority of the old members and of the new ones, so no
    quorum of the old configuration can act any more. Leaving it: the joint configuration's
    own quorum, which again covers both sides.
    """
    if new.is_joint:
        return new
    return old if old.is_joint else new
