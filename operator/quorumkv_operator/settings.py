"""One frozen settings object, parsed once from flags and the environment.

Handlers never read the environment themselves: everything they may vary on is here, with
the reason it exists, so a test can build a `Settings` by hand and a reader sees every knob.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
from collections.abc import Mapping


@dataclasses.dataclass(frozen=True)
class Settings:
    namespaces: tuple[str, ...] = ()
    """Namespaces to watch (`-n`, repeatable). Empty together with `clusterwide=False` means
    the namespace of the operator's own pod (`POD_NAMESPACE`) or `default`."""

    clusterwide: bool = False
    """Watch every namespace (`-A`). Needs a ClusterRole (the chart's `watch.clusterWide`)."""

    standalone: bool = True
    """Run without kopf peering. False only for HA installs with a KopfPeering object."""

    peering_name: str = "quorumkv-operator"
    """Name of the (Cluster)KopfPeering object shared by the operator replicas."""

    priority: int = 0
    """kopf peering priority; must differ between replicas (equal priorities freeze all)."""

    liveness_endpoint: str | None = "http://0.0.0.0:8081/healthz"
    """Where kopf serves its liveness probe; None disables it."""

    default_image: str = "quorumkv:dev"
    """Replica image when a KVCluster has no `spec.image`: the operator's own image."""

    cluster_domain: str = "cluster.local"
    """DNS suffix used in the peer URLs the replicas are given."""

    volume_permissions_init: bool = False
    """Add a root init container that chowns the data volume to the replica's uid. Only for
    storage that ignores `fsGroup` (hostPath-style provisioners such as Kubernetes' in-tree
    `kubernetes.io/host-path`, which creates 0750 root-owned directories). Off by default:
    it is the one non-hardened container (root, CAP_CHOWN + CAP_FOWNER only)."""

    probe_timeout: float = 1.0
    """Seconds the operator waits for a replica's `/v1/cluster`. Short: a status refresh
    must not stall behind one dead pod, and pod readiness is the fallback."""

    resync_interval: float = 30.0
    """Seconds between drift checks of each KVCluster (kopf timer)."""

    drive_interval: float = 2.0
    """Seconds between reconcile cycles of a KVCluster while a scale is in progress or
    waiting (kopf timer; idle clusters skip it). Each cycle is one step of the change."""

    stale_watch_after: float = 300.0
    """Liveness fails when KVClusters exist but no event about them arrived for this long
    (the timer writes status each interval, so a healthy watch sees events)."""

    log_format: str = "json"
    """`json` (structured, one object per line) or `full` (kopf's human format)."""

    @property
    def watched_namespaces(self) -> tuple[str, ...]:
        if self.clusterwide:
            return ()
        if self.namespaces:
            return self.namespaces
        return (os.environ.get("POD_NAMESPACE") or "default",)


def default_priority(hostname: str | None = None) -> int:
    """A peering priority derived from the pod name (hostname), so the replicas of one
    Deployment get distinct priorities without coordination. 1..2**31-1; a clash between two
    replicas has odds of about 1 in 10**9 and only pauses both until one restarts."""
    name = hostname or socket.gethostname()
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:4], "big") % (2**31 - 1) + 1


def env_settings(env: Mapping[str, str]) -> dict[str, object]:
    """The fields the environment may set (the chart uses these, flags override them)."""
    out: dict[str, object] = {}
    if env.get("QUORUMKV_OPERATOR_DEFAULT_IMAGE"):
        out["default_image"] = env["QUORUMKV_OPERATOR_DEFAULT_IMAGE"]
    if env.get("QUORUMKV_OPERATOR_CLUSTER_DOMAIN"):
        out["cluster_domain"] = env["QUORUMKV_OPERATOR_CLUSTER_DOMAIN"]
    if env.get("QUORUMKV_OPERATOR_VOLUME_PERMISSIONS_INIT"):
        flag = env["QUORUMKV_OPERATOR_VOLUME_PERMISSIONS_INIT"].strip().lower()
        out["volume_permissions_init"] = flag in ("1", "true", "yes", "on")
    if env.get("QUORUMKV_OPERATOR_PROBE_TIMEOUT"):
        out["probe_timeout"] = float(env["QUORUMKV_OPERATOR_PROBE_TIMEOUT"])
    if env.get("QUORUMKV_OPERATOR_RESYNC_INTERVAL"):
        out["resync_interval"] = float(env["QUORUMKV_OPERATOR_RESYNC_INTERVAL"])
    if env.get("QUORUMKV_OPERATOR_DRIVE_INTERVAL"):
        out["drive_interval"] = float(env["QUORUMKV_OPERATOR_DRIVE_INTERVAL"])
    if env.get("QUORUMKV_OPERATOR_LOG_FORMAT"):
        out["log_format"] = env["QUORUMKV_OPERATOR_LOG_FORMAT"]
    return out
