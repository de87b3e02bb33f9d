"""The KVCluster spec as an immutable value, with the defaults the CRD also declares.

The API server applies the CRD's defaults, but the operator must not crash on an object
written before a default existed, so `ClusterSpec.from_body` fills them in again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

DEFAULT_REPLICAS = 3
DEFAULT_STORAGE_SIZE = "1Gi"
RECLAIM_RETAIN = "Retain"
RECLAIM_DELETE = "Delete"


@dataclasses.dataclass(frozen=True)
class ClusterSpec:
    """What the user asked for, plus the identity needed to own objects on its behalf."""

    name: str
    namespace: str
    uid: str
    generation: int
    replicas: int
    image: str
    storage_size: str
    storage_class: str | None
    reclaim_policy: str
    resources: Mapping[str, Any]

    @classmethod
    def from_body(cls, body: Mapping[str, Any], default_image: str) -> ClusterSpec:
        meta = body.get("metadata", {})
        spec = body.get("spec") or {}
        storage = spec.get("storage") or {}
        return cls(
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta.get("uid", ""),
            generation=int(meta.get("generation", 0)),
            replicas=int(spec.get("replicas", DEFAULT_REPLICAS)),
            image=spec.get("image") or default_image,
            storage_size=str(storage.get("size") or DEFAULT_STORAGE_SIZE),
            storage_class=storage.get("storageClassName"),
            reclaim_policy=storage.get("reclaimPolicy") or RECLAIM_RETAIN,
            resources=dict(spec.get("resources") or {}),
        )


def quorum(members: int) -> int:
    """Majority size: the number of members that must answer for reads and writes."""
    return members // 2 + 1


def tolerated_failures(members: int) -> int:
    """How many members may be down while a majority still answers."""
    return max(members - quorum(members), 0)
