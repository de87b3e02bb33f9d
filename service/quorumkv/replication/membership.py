"""Who the members are, in which configuration (epoch), and which incarnation of each may vote.

Configurations only move forward: a node adopts a configuration with a higher epoch from any
peer (durably, before acting on it) and refuses messages stamped with an older or a different
one, telling the sender what it has instead. That is how a change, once installed on its
quorum, reaches everyone, and how no quorum of a superseded configuration can act.

Each data directory gets a random incarnation id when it is created. Peers learn each other's
incarnation on first contact and keep it durably (trust on first use); from then on messages
and replies from another incarnation of that node id are refused. So a replica that lost its
disk comes back as a stranger: it cannot vote with promises it has forgotten, and it knows it
(`stale`), so it reports itself not ready. Removing a node from the membership forgets its
incarnation, so it can be added back later with a new disk through the same change procedure.

Every configuration carries the cluster's id, fixed when the cluster was founded; a replica
never adopts a configuration of another cluster nor takes its batches, so a replica of
another cluster named as a peer or a new member by mistake is refused, not merged.

A node that becomes a voter (added by a change) forgets every acceptor state it had before it
acknowledges the configuration: a stale data directory from an earlier membership (a PVC kept
after a scale-down) could otherwise bring back an old accepted value at a high ballot and
override newer writes. The change's rescan then gives it the current values. A node that
was removed and added back while it was down never saw the removal: the configuration
records the epoch at which each voter was added, so it knows its data predates that too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

import orjson

from quorumkv.core.quorum import Config

log = logging.getLogger("quorumkv.membership")

META_INCARNATION = "incarnation:"
META_CONFIG = "config"
MAX_REFUSALS_TOLD = 1024

Persist = Callable[[str, str], "asyncio.Future[None]"]


class Membership:
    def __init__(
        self,
        node_id: str,
        incarnation: str,
        config: Config,
        known: Mapping[str, str],
        persist: Persist,
    ) -> None:
        self.node_id = node_id
        self.incarnation = incarnation
        self.config = config
        self._known = dict(known)
        self._known[node_id] = incarnation
        self._persist = persist
        self._listeners: list[Callable[[Config], None]] = []
        self._on_join: Callable[[], asyncio.Future[None] | None] | None = None
        self.refused_by: set[str] = set()  # peers that know this node id as another incarnation
        self._refusals_told: set[tuple[str, str]] = set()  # see `first_refusal`

    def on_change(self, listener: Callable[[Config], None]) -> None:
        self._listeners.append(listener)

    def on_join(self, forget: Callable[[], asyncio.Future[None] | None]) -> None:
        """`forget` drops this node's acceptor state when it becomes a voter; returns its
        commit."""
        self._on_join = forget

    def adopt(self, config: Config) -> asyncio.Future[None] | None:
        """Take `config` if it is newer and of this cluster; returns the commit to wait for
        before acting on it. A replica that knows its cluster's id takes only configurations
        that carry it: one without an id may come from a cluster founded before ids (found
        by adversarial testing: a change adding such a replica handed its configuration to
        every member)."""
        if config.epoch <= self.config.epoch:
            return None
        if self.config.initialized and self.config.cluster \
                and config.cluster != self.config.cluster:
            return None
        old, self.config = self.config, config
        self._refusals_told.clear()
        joined = self.node_id in config.voters and not (
            old.initialized and self.node_id in old.voters
            and config.joined_at(self.node_id) <= old.epoch)  # not added back since
        forgotten = self._on_join() if joined and self._on_join is not None else None
        for node in old.voters - config.voters:
            if node != self.node_id:
                self._known.pop(node, None)
                self._persist(META_INCARNATION + node, "")
        log.info("configuration adopted", extra={
            "epoch": config.epoch, "members": sorted(config.members),
            "joining": None if config.joining is None else sorted(config.joining)})
        durable = self._persist(META_CONFIG, orjson.dumps(config.to_json()).decode())
        for listener in self._listeners:
            listener(config)
        # staged back to back, the forgetting and the configuration share one group commit
        assert forgotten is None or forgotten is durable
        return durable

    def learn_cluster_id(self, config: Config) -> None:
        """Take the cluster id from a voter's `config` that is ours but for it. A replica
        that ran a version without ids during a rollback lost ours; without it the changes
        it drives would be refused by every replica that kept it (found by testing)."""
        if self.config.cluster or not config.cluster or not self.config.initialized \
                or not config.agrees_with(self.config):
            return
        self.config = self.config._replace(cluster=config.cluster)
        log.info("learned the cluster id", extra={"cluster": config.cluster,
                                                  "epoch": self.config.epoch})
        self._persist(META_CONFIG, orjson.dumps(self.config.to_json()).decode())

    @property
    def is_voter(self) -> bool:
        return self.config.initialized and self.node_id in self.config.voters

    def admits(self, node: str, incarnation: str) -> bool:
        """Whether `node` speaking as `incarnation` may vote; learns it on first use."""
        if node not in self.config.voters:
            return False
        known = self._known.get(node)
        if known is None:
            self._known[node] = incarnation
            self._persist(META_INCARNATION + node, incarnation)
            return True
        return known == incarnation

    def first_refusal(self, node: str, incarnation: str) -> bool:
        """Whether refusing `node` as `incarnation` is news under this configuration. A
        replica waiting to be added heartbeats every member four times a second until it is:
        the operator of the system needs one log line for that, not four a second."""
        told = (node, incarnation) in self._refusals_told
        if len(self._refusals_told) >= MAX_REFUSALS_TOLD:  # strangers cannot grow it for good
            self._refusals_told.clear()
        self._refusals_told.add((node, incarnation))
        return not told

    def known_incarnation(self, node: str) -> str | None:
        return self._known.get(node)

    @property
    def stale(self) -> bool:
        """A quorum of peers knows this node id under another incarnation: it lost its disk."""
        peers = self.config.voters - {self.node_id}
        return bool(peers) and len(self.refused_by & peers) * 2 >= len(peers)


def known_from_meta(get_meta: Callable[[str], str | None], nodes: set[str]) -> dict[str, str]:
    known = {}
    for node in nodes:
        value = get_meta(META_INCARNATION + node)
        if value:
            known[node] = value
    return known


def config_from_meta(get_meta: Callable[[str], str | None]) -> Config | None:
    raw = get_meta(META_CONFIG)
    return None if raw is None else Config.from_json(orjson.loads(raw))
