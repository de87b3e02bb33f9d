"""Pure builders: a KVCluster spec in, the manifests of the objects it owns out.

No I/O and no kopf here, so that every field a user relies on is covered by unit tests and
a re-run of the operator produces byte-for-byte the same desired state (level-triggered).
Names: for KVCluster `demo` the operator owns StatefulSet `demo`, headless Service
`demo-peers`, client Service `demo`, PodDisruptionBudget `demo` and Secret `demo-token`.
"""

from __future__ import annotations

from typing import Any

from quorumkv_operator.model import RECLAIM_DELETE, ClusterSpec, tolerated_failures
from quorumkv_operator.names import API_VERSION, KIND, MANAGER

Manifest = dict[str, Any]

PORT = 8080
DATA_DIR = "/var/lib/quorumkv"
TOKEN_DIR = "/etc/quorumkv/token"
TOKEN_KEY = "token"
RUN_AS = 10001
DRAIN_SECONDS = 2  # a terminating replica serves this long before its SIGTERM
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
BOOTSTRAP_ANNOTATION = "quorumkv.dev/bootstrap-members"


def selector_labels(name: str) -> dict[str, str]:
    """The labels that select a cluster's pods: stable for the life of the StatefulSet
    (its selector is immutable), so never add to them."""
    return {"app.kubernetes.io/name": "quorumkv", "app.kubernetes.io/instance": name}


def labels(name: str, component: str = "replica") -> dict[str, str]:
    return {
        **selector_labels(name),
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "quorumkv",
        "app.kubernetes.io/managed-by": MANAGER,
    }


def selector_string(name: str) -> str:
    """`status.selector` for the scale subresource (label-selector string form)."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(name).items()))


def peers_service_name(name: str) -> str:
    return f"{name}-peers"


def token_secret_name(name: str) -> str:
    return f"{name}-token"


def owner_reference(spec: ClusterSpec) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": spec.name,
        "uid": spec.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _meta(spec: ClusterSpec, name: str, component: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": spec.namespace,
        "labels": labels(spec.name, component),
        "ownerReferences": [owner_reference(spec)],
    }


def peer_url(name: str, namespace: str, ordinal: int, cluster_domain: str) -> str:
    host = f"{name}-{ordinal}.{peers_service_name(name)}.{namespace}.svc.{cluster_domain}"
    return f"http://{host}:{PORT}"


def peers_value(name: str, namespace: str, members: int, cluster_domain: str) -> str:
    """`QUORUMKV_PEERS`: the *bootstrap* members (the cluster's first configuration),
    `ID=URL` comma-separated; node ids are the pod ordinals. Fixed for the life of the
    cluster: later memberships live in the replicas' configuration, and a pod whose ordinal
    is not listed starts as a non-voter that waits to be added."""
    return ",".join(
        f"{i}={peer_url(name, namespace, i, cluster_domain)}" for i in range(members)
    )


def advertise_url(name: str, namespace: str, cluster_domain: str) -> str:
    """`QUORUMKV_ADVERTISE_URL`: the pod's own peer URL, from `$(POD_NAME)`."""
    host = f"$(POD_NAME).{peers_service_name(name)}.{namespace}.svc.{cluster_domain}"
    return f"http://{host}:{PORT}"


def _container(spec: ClusterSpec, bootstrap: int, cluster_domain: str) -> dict[str, Any]:
    probe = {"httpGet": {"path": "/readyz", "port": "http"}}
    return {
        "name": "quorumkv",
        "image": spec.image,
        "command": ["quorumkv", "serve"],
        "env": [
            {"name": "QUORUMKV_NODE_ID", "valueFrom": {"fieldRef": {
                "fieldPath": f"metadata.labels['{POD_INDEX_LABEL}']"}}},
            {"name": "QUORUMKV_LISTEN", "value": f"0.0.0.0:{PORT}"},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "QUORUMKV_ADVERTISE_URL",
             "value": advertise_url(spec.name, spec.namespace, cluster_domain)},
            {"name": "QUORUMKV_PEERS",
             "value": peers_value(spec.name, spec.namespace, bootstrap, cluster_domain)},
            {"name": "QUORUMKV_DATA_DIR", "value": DATA_DIR},
            {"name": "QUORUMKV_AUTH_TOKEN_FILE", "value": f"{TOKEN_DIR}/{TOKEN_KEY}"},
        ],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        # a terminating pod leaves the Service's endpoints at once, but kube-proxy takes a
        # moment to hear of it: serving on meanwhile spares clients "connection refused"
        # (measured: 30 per rolling restart of 3 replicas before)
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(DRAIN_SECONDS)]}}},
        "readinessProbe": {**probe, "periodSeconds": 2, "timeoutSeconds": 2,
                           "failureThreshold": 2},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                          "periodSeconds": 10, "timeoutSeconds": 3, "failureThreshold": 3},
        "startupProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                         "periodSeconds": 1, "timeoutSeconds": 2, "failureThreshold": 120},
        "resources": dict(spec.resources),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": "data", "mountPath": DATA_DIR},
            {"name": "token", "mountPath": TOKEN_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }


def volume_claim_template(spec: ClusterSpec, size: str) -> dict[str, Any]:
    claim: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": size}},
    }
    if spec.storage_class is not None:
        claim["storageClassName"] = spec.storage_class
    return {"metadata": {"name": "data", "labels": selector_labels(spec.name)}, "spec": claim}


def volume_permissions_container(spec: ClusterSpec) -> dict[str, Any]:
    """Opt-in (see `Settings.volume_permissions_init`): make the data volume writable by the
    replica's uid on storage that ignores fsGroup. Root, but only CHOWN and FOWNER."""
    return {
        "name": "volume-permissions",
        "image": spec.image,
        "command": ["sh", "-c", f"chown {RUN_AS}:{RUN_AS} {DATA_DIR} && chmod 0770 {DATA_DIR}"],
        "securityContext": {
            "runAsUser": 0,
            "runAsGroup": 0,
            "runAsNonRoot": False,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"], "add": ["CHOWN", "FOWNER"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "data", "mountPath": DATA_DIR}],
    }


def statefulset(
    spec: ClusterSpec, *, replicas: int, cluster_domain: str, bootstrap: int | None = None,
    claim_size: str | None = None, volume_permissions_init: bool = False,
) -> Manifest:
    """The replicas. `replicas` is the pod count the scaling plan wants now (members plus
    pods being added or not yet removed); `bootstrap` the first configuration's size, which
    `QUORUMKV_PEERS` keeps for the life of the cluster (default `replicas`: a new cluster);
    `claim_size` is the size already in the existing StatefulSet's claim template, which
    Kubernetes does not let us change."""
    pod_labels = labels(spec.name)
    bootstrap = replicas if bootstrap is None else bootstrap
    meta = _meta(spec, spec.name, "replica")
    meta["annotations"] = {BOOTSTRAP_ANNOTATION: str(bootstrap)}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": meta,
        "spec": {
            "replicas": replicas,
            "serviceName": peers_service_name(spec.name),
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "RollingUpdate"},
            "selector": {"matchLabels": selector_labels(spec.name)},
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": "Delete" if spec.reclaim_policy == RECLAIM_DELETE else "Retain",
                "whenScaled": "Retain",
            },
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "terminationGracePeriodSeconds": 30,
                    "enableServiceLinks": False,
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": RUN_AS,
                        "runAsGroup": RUN_AS,
                        "fsGroup": RUN_AS,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "affinity": {"podAntiAffinity": {
                        "preferredDuringSchedulingIgnoredDuringExecution": [{
                            "weight": 100,
                            "podAffinityTerm": {
                                "topologyKey": "kubernetes.io/hostname",
                                "labelSelector": {"matchLabels": selector_labels(spec.name)},
                            },
                        }],
                    }},
                    "initContainers": (
                        [volume_permissions_container(spec)] if volume_permissions_init else []
                    ),
                    "containers": [_container(spec, bootstrap, cluster_domain)],
                    "volumes": [
                        {"name": "token", "secret": {
                            "secretName": token_secret_name(spec.name), "defaultMode": 0o440}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                    ],
                },
            },
            "volumeClaimTemplates": [volume_claim_template(spec, claim_size or spec.storage_size)],
        },
    }


def peers_service(spec: ClusterSpec) -> Manifest:
    """Headless: gives each pod a stable DNS name, published before it is ready so that
    replicas can find each other while they start."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(spec, peers_service_name(spec.name), "peers"),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector_labels(spec.name),
            "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def client_service(spec: ClusterSpec) -> Manifest:
    """What users connect to: any ready replica coordinates a request."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(spec, spec.name, "client"),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(spec.name),
            "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def pod_disruption_budget(spec: ClusterSpec, *, members: int) -> Manifest:
    """Voluntary evictions may take at most the failures a majority tolerates. With 1 or 2
    members that is 0: a drain then waits for the user, which is the honest answer."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(spec, spec.name, "replica"),
        "spec": {
            "maxUnavailable": tolerated_failures(members),
            "selector": {"matchLabels": selector_labels(spec.name)},
        },
    }


def token_secret(spec: ClusterSpec, token: str) -> Manifest:
    """The peer token. Created once (the caller generates `token`); never rewritten, since
    replicas that disagree on it cannot talk to each other."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(spec, token_secret_name(spec.name), "auth"),
        "type": "Opaque",
        "stringData": {TOKEN_KEY: token},
    }
