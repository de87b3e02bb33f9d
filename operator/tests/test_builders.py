"""Builders are pure: check every field a user or a replica relies on."""

from __future__ import annotations

from typing import Any

from conftest import kvcluster
from quorumkv_operator import builders
from quorumkv_operator.model import ClusterSpec


def container(sts: dict[str, Any]) -> dict[str, Any]:
    c: dict[str, Any] = sts["spec"]["template"]["spec"]["containers"][0]
    return c


def env(sts: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(sts)["env"]}


def build(spec: ClusterSpec, replicas: int | None = None, **kw: Any) -> dict[str, Any]:
    return builders.statefulset(spec, replicas=replicas or spec.replicas,
                                cluster_domain="cluster.local", **kw)


def test_defaults_from_an_empty_spec() -> None:
    spec = ClusterSpec.from_body(kvcluster(spec={}), "img:1")
    assert (spec.replicas, spec.image, spec.storage_size) == (3, "img:1", "1Gi")
    assert spec.storage_class is None and spec.reclaim_policy == "Retain"


def test_statefulset_identity_and_ownership(spec: ClusterSpec) -> None:
    sts = build(spec)
    meta = sts["metadata"]
    assert (meta["name"], meta["namespace"]) == ("demo", "ns")
    owner = meta["ownerReferences"][0]
    assert owner == {"apiVersion": "quorumkv.dev/v1alpha1", "kind": "KVCluster",
                     "name": "demo", "uid": "uid-1", "controller": True,
                     "blockOwnerDeletion": True}
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "quorumkv-operator"
    s = sts["spec"]
    assert s["replicas"] == 3
    assert s["serviceName"] == "demo-peers"
    assert s["podManagementPolicy"] == "Parallel"
    assert s["selector"]["matchLabels"] == {"app.kubernetes.io/name": "quorumkv",
                                            "app.kubernetes.io/instance": "demo"}
    pod_labels = s["template"]["metadata"]["labels"]
    assert s["selector"]["matchLabels"].items() <= pod_labels.items()


def test_replica_env_peers_and_node_id(spec: ClusterSpec) -> None:
    e = env(build(spec))
    assert e["QUORUMKV_NODE_ID"] == {"fieldRef": {
        "fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}}
    assert e["QUORUMKV_PEERS"] == ",".join(
        f"{i}=http://demo-{i}.demo-peers.ns.svc.cluster.local:8080" for i in range(3))
    assert e["QUORUMKV_LISTEN"] == "0.0.0.0:8080"
    assert e["QUORUMKV_DATA_DIR"] == "/var/lib/quorumkv"
    assert e["QUORUMKV_AUTH_TOKEN_FILE"] == "/etc/quorumkv/token/token"


def test_every_pod_advertises_its_own_peer_url(spec: ClusterSpec) -> None:
    c = container(build(spec))
    names = [x["name"] for x in c["env"]]
    # a dependent variable must come after the one it references
    assert names.index("POD_NAME") < names.index("QUORUMKV_ADVERTISE_URL")
    e = env(build(spec))
    assert e["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert e["QUORUMKV_ADVERTISE_URL"] == \
        "http://$(POD_NAME).demo-peers.ns.svc.cluster.local:8080"


def test_peers_are_the_bootstrap_members_whatever_the_size(spec: ClusterSpec) -> None:
    """Scaling changes the pod count, never QUORUMKV_PEERS (which would roll every pod)."""
    small, big = build(spec, bootstrap=3), build(spec, replicas=5, bootstrap=3)
    assert (small["spec"]["replicas"], big["spec"]["replicas"]) == (3, 5)
    assert env(big)["QUORUMKV_PEERS"] == env(small)["QUORUMKV_PEERS"]
    assert env(big)["QUORUMKV_PEERS"].count("=http://") == 3
    assert small["spec"]["template"] == big["spec"]["template"]
    assert build(spec, replicas=5)["metadata"]["annotations"] == {
        "quorumkv.dev/bootstrap-members": "5"}


def test_probes_ports_command_and_image(spec: ClusterSpec) -> None:
    c = container(build(spec))
    assert c["image"] == "quorumkv:dev"
    assert c["command"] == ["quorumkv", "serve"]
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # still serving while kube-proxy learns that the pod is going
    assert c["lifecycle"]["preStop"] == {"exec": {"command": ["sleep", "2"]}}


def test_hardened_security_context(spec: ClusterSpec) -> None:
    sts = build(spec)
    pod = sts["spec"]["template"]["spec"]
    assert pod["securityContext"]["fsGroup"] == 10001
    assert pod["securityContext"]["runAsNonRoot"] is True
    sc = container(sts)["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    mounts = {m["mountPath"]: m["name"] for m in container(sts)["volumeMounts"]}
    assert mounts == {"/var/lib/quorumkv": "data", "/etc/quorumkv/token": "token",
                      "/tmp": "tmp"}
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["token"]["secret"]["secretName"] == "demo-token"
    assert "emptyDir" in vols["tmp"]


def test_storage_and_reclaim_policy() -> None:
    body = kvcluster(spec={"storage": {"size": "5Gi", "storageClassName": "fast",
                                       "reclaimPolicy": "Delete"}})
    spec = ClusterSpec.from_body(body, "img")
    sts = build(spec)
    vct = sts["spec"]["volumeClaimTemplates"][0]
    assert vct["metadata"]["name"] == "data"
    assert vct["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert vct["spec"]["storageClassName"] == "fast"
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Delete", "whenScaled": "Retain"}


def test_retain_is_default_and_no_class_means_default_class(spec: ClusterSpec) -> None:
    sts = build(spec)
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Retain"
    assert "storageClassName" not in sts["spec"]["volumeClaimTemplates"][0]["spec"]


def test_existing_claim_size_is_kept(spec: ClusterSpec) -> None:
    """volumeClaimTemplates are immutable: a grown spec must not be sent to the StatefulSet."""
    sts = build(spec, claim_size="1Gi")
    grown = ClusterSpec.from_body(kvcluster(spec={"storage": {"size": "2Gi"}}), "img")
    sts2 = build(grown, claim_size="1Gi")
    assert sts["spec"]["volumeClaimTemplates"] == sts2["spec"]["volumeClaimTemplates"]


def test_resources_and_image_override() -> None:
    res = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}
    spec = ClusterSpec.from_body(kvcluster(spec={"resources": res, "image": "x:2"}), "img")
    c = container(build(spec))
    assert c["resources"] == res
    assert c["image"] == "x:2"


def test_services(spec: ClusterSpec) -> None:
    peers = builders.peers_service(spec)
    assert peers["metadata"]["name"] == "demo-peers"
    assert peers["spec"]["clusterIP"] == "None"
    assert peers["spec"]["publishNotReadyAddresses"] is True
    client = builders.client_service(spec)
    assert client["metadata"]["name"] == "demo"
    assert client["spec"]["ports"][0]["port"] == 8080
    assert client["spec"]["ports"][0]["targetPort"] == "http"
    for svc in (peers, client):
        assert svc["spec"]["selector"] == builders.selector_labels("demo")
        assert svc["metadata"]["ownerReferences"][0]["uid"] == "uid-1"


def test_pdb_keeps_a_majority(spec: ClusterSpec) -> None:
    expect = {1: 0, 2: 0, 3: 1, 4: 1, 5: 2, 7: 3, 9: 4}
    for members, max_unavailable in expect.items():
        pdb = builders.pod_disruption_budget(spec, members=members)
        assert pdb["spec"]["maxUnavailable"] == max_unavailable, members
    assert pdb["spec"]["selector"]["matchLabels"] == builders.selector_labels("demo")


def test_token_secret(spec: ClusterSpec) -> None:
    sec = builders.token_secret(spec, "s3cret")
    assert sec["metadata"]["name"] == "demo-token"
    assert sec["stringData"] == {"token": "s3cret"}
    assert sec["metadata"]["ownerReferences"][0]["kind"] == "KVCluster"


def test_selector_string_matches_labels() -> None:
    assert builders.selector_string("demo") == (
        "app.kubernetes.io/instance=demo,app.kubernetes.io/name=quorumkv")


def test_builders_are_deterministic(spec: ClusterSpec) -> None:
    assert build(spec) == build(spec)
    assert builders.token_secret(spec, "t") == builders.token_secret(spec, "t")


def test_volume_permissions_init_is_opt_in(spec: ClusterSpec) -> None:
    assert build(spec)["spec"]["template"]["spec"]["initContainers"] == []
    (init,) = build(spec, volume_permissions_init=True)["spec"]["template"]["spec"][
        "initContainers"]
    assert init["securityContext"]["runAsUser"] == 0
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"],
                                                       "add": ["CHOWN", "FOWNER"]}
    assert init["securityContext"]["allowPrivilegeEscalation"] is False
    assert init["volumeMounts"] == [{"name": "data", "mountPath": "/var/lib/quorumkv"}]
    assert "10001:10001" in init["command"][-1]
