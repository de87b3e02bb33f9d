"""The handlers against the real API server, with the operator running in this process
(kopf's KopfRunner): a KVCluster gets its objects and status; an operator restart changes
nothing that is already right; drift is undone. Runs in its own namespace, which the
deployed operator does not watch."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import kopf
import pytest
from conftest import VOLUME_PERMISSIONS
from kopf.testing import KopfRunner
from kube import CHART, Kubectl, condition, summary, wait_for
from quorumkv_operator.cli import kopf_settings, parse_args
from quorumkv_operator.handlers import register

OWNED = [("statefulset", "inproc"), ("service", "inproc"), ("service", "inproc-peers"),
         ("pdb", "inproc"), ("secret", "inproc-token")]
SAMPLE = """
apiVersion: quorumkv.dev/v1alpha1
kind: KVCluster
metadata: {name: inproc}
spec: {replicas: 1, storage: {size: 64Mi, reclaimPolicy: Delete}}
"""


@pytest.fixture(scope="module")
def ns(kubectl: Kubectl) -> Iterator[Kubectl]:
    name = f"qkv-e2e-inproc-{uuid.uuid4().hex[:6]}"
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    kubectl("create", "namespace", name)
    try:
        yield kubectl.in_namespace(name)
    finally:
        kubectl("delete", "namespace", name, "--wait=false", check=False)


def runner(namespace: str) -> KopfRunner:
    settings, _ = parse_args(["-n", namespace, "--standalone", "--liveness", "off",
                              "--log-format", "full"],
                             env={"QUORUMKV_OPERATOR_VOLUME_PERMISSIONS_INIT": VOLUME_PERMISSIONS})
    registry = kopf.OperatorRegistry()
    register(registry, settings)
    return KopfRunner(["run", "--standalone", "-n", namespace, "--verbose"],
                      registry=registry, settings=kopf_settings(settings), timeout=60)


def versions(k: Kubectl) -> dict[str, str]:
    """What an operator write would change: `generation` where controllers also write status
    (StatefulSet, PDB), else `resourceVersion`."""
    out = {}
    for kind, name in OWNED:
        obj = k.get(kind, name)
        meta = (obj or {}).get("metadata") or {}
        key = "generation" if kind in ("statefulset", "pdb") else "resourceVersion"
        out[f"{kind}/{name}"] = str(meta[key]) if obj else "<absent>"
    return out


def kvc(k: Kubectl) -> dict[str, Any] | None:
    return k.get("kvc", "inproc")


def test_handlers_against_the_api_server(ns: Kubectl) -> None:
    namespace = ns.namespace
    assert namespace
    try:
        _run_scenario(ns, namespace)
    finally:
        # KVClusters carry the operator's finalizer: delete them while an operator runs,
        # or the namespace could not go away.
        if ns.get("kvc", "inproc") is not None:
            with runner(namespace):
                ns("delete", "kvc", "inproc", "--wait=true", "--timeout=60s", check=False)


def _run_scenario(ns: Kubectl, namespace: str) -> None:
    with runner(namespace) as r1:
        ns.apply(SAMPLE)
        wait_for(lambda: all(v != "<absent>" for v in versions(ns).values()), timeout=60,
                 what="the operator to create every owned object", seen=lambda: versions(ns))
        wait_for(lambda: condition(kvc(ns), "Available").get("status") == "True",
                 timeout=180, what="inproc Available", seen=lambda: summary(kvc(ns)))
        obj = kvc(ns)
        assert obj is not None
        assert obj["status"]["replicas"] == 1
        assert "kopf" not in obj["status"], "kopf bookkeeping must not land in status"
        assert not any(key.startswith("reconcile") for key in obj["status"])
        # drift: a hand-edited StatefulSet is put back by the next reconcile
        ns("scale", "statefulset", "inproc", "--replicas=2")
        wait_for(lambda: (ns.get("statefulset", "inproc") or {}).get("spec", {})
                 .get("replicas") == 1, timeout=60, what="the drift timer to undo a manual scale")
        wait_for(lambda: condition(kvc(ns), "Available").get("status") == "True"
                 and (kvc(ns) or {}).get("status", {}).get("readyReplicas") == 1,
                 timeout=120, what="inproc back to 1 ready", seen=lambda: summary(kvc(ns)))
    assert r1.exception is None, r1.output[-3000:]

    before = versions(ns)
    with runner(namespace) as r2:
        # the resume handler runs on start; wait for its status write, then compare
        t0 = (kvc(ns) or {}).get("status", {}).get("lastProbeTime")
        wait_for(lambda: (kvc(ns) or {}).get("status", {}).get("lastProbeTime") != t0,
                 timeout=60, interval=0.5, what="the restarted operator to reconcile")
        assert versions(ns) == before, "a restart must not change objects that are right"
        ns("delete", "kvc", "inproc", "--wait=true", "--timeout=60s")
        wait_for(lambda: all(v == "<absent>" for v in versions(ns).values()), timeout=90,
                 what="owned objects to be garbage-collected", seen=lambda: versions(ns))
    assert r2.exception is None, r2.output[-3000:]
