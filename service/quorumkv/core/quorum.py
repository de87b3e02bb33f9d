"""Membership configurations and the quorums they require.

A configuration is numbered (its epoch) and carries the address of every voter. During a
membership change it is joint: a phase succeeds only with a majority of the old member set
AND a majority of the new one, which is what keeps every chosen value visible across the
change.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

MAX_CLUSTER_ID = 64


class Config(NamedTuple):
    epoch: int
    members: frozenset[str]
    joining: frozenset[str] | None = None  # the new member set while a change is joint
    urls: tuple[tuple[str, str], ...] = ()  # (node, base URL) of every voter, sorted
    # (node, epoch) of every voter added by a change, sorted: the epoch of the joint
    # configuration that added it last. A node that was removed and added back while it
    # was down never saw the removal; this tells it that its data predates its membership.
    joined: tuple[tuple[str, int], ...] = ()
    # The cluster's id, fixed when it was founded (`founding_id`) and carried by every later
    # configuration: replicas of two clusters never adopt each other's configuration or
    # take each other's batches. "" before a replica has joined, and in clusters founded by
    # a version without ids.
    cluster: str = ""

    @property
    def voters(self) -> frozenset[str]:
        """Every node whose reply can count toward some quorum."""
        return self.members if self.joining is None else self.members | self.joining

    @property
    def initialized(self) -> bool:
        """Epoch 0 is the bootstrap proposal of a replica that has not joined any cluster."""
        return self.epoch >= 1

    @property
    def is_joint(self) -> bool:
        return self.joining is not None

    def url_map(self) -> dict[str, str]:
        return dict(self.urls)

    def joined_map(self) -> dict[str, int]:
        return dict(self.joined)

    def joined_at(self, node: str) -> int:
        """The epoch at which `node` was last added; 0 for a founding member (and in a
        configuration written by a version that did not record it)."""
        return self.joined_map().get(node, 0)

    def agrees_with(self, other: Config) -> bool:
        """The same configuration, `joined` aside: a peer of an earlier version drops it,
        and it matters only to the node it names."""
        return self[:4] == other[:4]

    def foreign_to(self, other: Config) -> bool:
        """Whether the two configurations belong to different clusters (as far as both
        know: one without an id belongs to any)."""
        return bool(self.cluster and other.cluster and self.cluster != other.cluster)

    def is_quorum(self, acks: Iterable[str]) -> bool:
        acked = set(acks)
        if not _majority(self.members, acked):
            return False
        return self.joining is None or _majority(self.joining, acked)

    def quorum_size(self) -> int:
        """Replies needed from the (old) member set; `/v1/cluster`'s `quorum` (during a
        change it reports the joining set's majority beside it)."""
        return len(self.members) // 2 + 1

    def to_json(self) -> dict[str, Any]:
        raw = {"epoch": self.epoch, "members": sorted(self.members),
               "joining": None if self.joining is None else sorted(self.joining),
               "urls": dict(self.urls)}
        if self.joined:
            raw["joined"] = dict(self.joined)
        if self.cluster:
            raw["cluster"] = self.cluster
        return raw

    @classmethod
    def from_json(cls, raw: Any) -> Config:
        """Strict parsing: peers and the data directory are trusted, but not to be sane."""
        if not isinstance(raw, dict):
            raise ValueError("a configuration must be a map")
        epoch, members, joining, urls = (raw.get(k) for k in ("epoch", "members", "joining",
                                                               "urls"))
        if not (isinstance(epoch, int) and epoch >= 0 and isinstance(members, list)
                and all(isinstance(m, str) for m in members) and members
                and isinstance(urls, dict)
                and all(isinstance(k, str) and isinstance(v, str) for k, v in urls.items())):
            raise ValueError(f"malformed configuration: {raw!r}")
        if joining is not None and not (isinstance(joining, list) and joining
                                        and all(isinstance(m, str) for m in joining)):
            raise ValueError(f"malformed joining member set: {joining!r}")
        joined = raw.get("joined", {})
        if not (isinstance(joined, dict) and all(
                isinstance(k, str) and isinstance(v, int) and v >= 0
                for k, v in joined.items())):
            raise ValueError(f"malformed epochs of joining: {joined!r}")
        cluster = raw.get("cluster", "")
        if not (isinstance(cluster, str) and len(cluster) <= MAX_CLUSTER_ID):
            raise ValueError(f"malformed cluster id: {cluster!r}")
        return make_config(epoch, members, joining, urls, joined, cluster)


def make_config(epoch: int, members: Iterable[str], joining: Iterable[str] | None,
                urls: Mapping[str, str], joined: Mapping[str, int] | None = None,
                cluster: str = "") -> Config:
    """A configuration; `urls` and `joined` may name more nodes than its voters."""
    config = Config(epoch, frozenset(members), None if joining is None else frozenset(joining),
                    cluster=cluster)
    missing = config.voters - set(urls)
    if missing:
        raise ValueError(f"no URL for member(s) {sorted(missing)}")
    return config._replace(
        urls=tuple(sorted((n, urls[n]) for n in config.voters)),
        joined=tuple(sorted((n, e) for n, e in (joined or {}).items()
                            if n in config.voters and e > 0)))


def _majority(members: frozenset[str], acked: set[str]) -> bool:
    return len(members & acked) * 2 > len(members)


def founding_id(incarnations: Mapping[str, str]) -> str:
    """The id of a cluster founded by these data directories (node -> incarnation).

    Its founders make the first configuration each on its own, once all of them answer
    (`node.bootstrap_config`), so the id must come out the same everywhere without a
    round of agreement: a hash of what each of them learned from the others' answers.
    Incarnations are random per data directory, so no two clusters share it.
    """
    material = "\n".join(f"{node}={incarnation}"
                          for node, incarnation in sorted(incarnations.items()))
    return hashlib.blake2b(material.encode(), digest_size=8).hexdigest()
