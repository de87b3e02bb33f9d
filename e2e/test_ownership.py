"""The operator never takes over an object it did not make: a Service the user had before
a KVCluster of the same name keeps its selector and owners, a Warning says why, and
deleting the KVCluster leaves the Service alone (it would be garbage-collected otherwise)."""

from __future__ import annotations

from typing import Any

from kube import Kubectl, wait_for

NAME = "mine"


def conflicts(k: Kubectl) -> list[dict[str, Any]]:
    items = k.json("get", "events", "--field-selector",
                   f"involvedObject.kind=KVCluster,involvedObject.name={NAME},"
                   "reason=ResourceConflict")
    return list(items["items"])


def test_a_service_of_the_user_is_never_taken_over(k: Kubectl, operator_ready: None) -> None:
    k("create", "service", "clusterip", NAME, "--tcp=80:8080")
    before = k.json("get", "service", NAME)
    try:
        k.apply(f"""
apiVersion: quorumkv.dev/v1alpha1
kind: KVCluster
metadata: {{name: {NAME}}}
spec: {{replicas: 1, storage: {{size: 64Mi, reclaimPolicy: Delete}}}}
""")
        event = wait_for(lambda: conflicts(k), timeout=60,
                         what="a ResourceConflict Event for the user's Service")[0]
        assert event["type"] == "Warning"
        assert f"Service/{NAME} exists and does not belong" in event["message"]
        after = k.json("get", "service", NAME)
        assert after["spec"]["selector"] == before["spec"]["selector"]
        assert after["spec"]["ports"] == before["spec"]["ports"]
        assert not after["metadata"].get("ownerReferences")
        wait_for(lambda: k.get("statefulset", NAME), timeout=60,
                 what="the rest of the KVCluster's objects to be made as usual")
        k("delete", "kvc", NAME, "--wait=true", timeout=120)
        assert k.get("service", NAME) is not None  # not garbage-collected with the KVCluster
    finally:
        k("delete", "kvc", NAME, "--ignore-not-found", "--wait=false", check=False)
        k("delete", "service", NAME, "--ignore-not-found", check=False)
