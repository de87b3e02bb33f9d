"""Who the members are, and which incarnation of each one may vote.

Each data directory gets a random incarnation id when it is created. Peers learn each
other's incarnation on first contact and keep it durably (trust on first use); from then on a
message or reply from a different incarnation of that node id is refused. So a replica that
lost its disk comes back as a stranger: it cannot vote with promises it has forgotten, and
it knows it (`stale`), so it reports itself not ready instead of serving.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from quorumkv.core.quorum import Config

META_PREFIX = "incarnation:"


class Membership:
    def __init__(
        self,
        node_id: str,
        incarnation: str,
        config: Config,
        urls: Mapping[str, str],
        known: Mapping[str, str],
        persist: Callable[[str, str], object],
    ) -> None:
        self.node_id = node_id
        self.incarnation = incarnation
        self.config = config
        self.urls = dict(urls)
        self._known = dict(known)
        self._known[node_id] = incarnation
        self._persist = persist
        self.refused_by: set[str] = set()  # peers that know this node id as another incarnation

    def admits(self, node: str, incarnation: str) -> bool:
        """Whether `node` speaking as `incarnation` may take part; learns it on first use."""
        if node not in self.config.voters:
            return False
        known = self._known.get(node)
        if known is None:
            self._known[node] = incarnation
            self._persist(META_PREFIX + node, incarnation)
            return True
        return known == incarnation

    def known_incarnation(self, node: str) -> str | None:
        return self._known.get(node)

    @property
    def stale(self) -> bool:
        """A quorum of peers knows this node id under another incarnation: it lost its disk."""
        peers = self.config.voters - {self.node_id}
        return bool(peers) and len(self.refused_by & peers) * 2 >= len(peers)

    def peers(self) -> dict[str, str]:
        return {node: url for node, url in self.urls.items() if node != self.node_id}


def known_from_meta(get_meta: Callable[[str], str | None], nodes: set[str]) -> dict[str, str]:
    known = {}
    for node in nodes:
        value = get_meta(META_PREFIX + node)
        if value is not None:
            known[node] = value
    return known
