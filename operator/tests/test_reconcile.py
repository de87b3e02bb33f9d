"""One reconcile cycle against an in-memory fake of the API (`apply.Kube`'s surface)."""

from __future__ import annotations

import copy
import logging
from typing import Any

import pytest
from conftest import kvcluster
from quorumkv_operator import reconcile
from quorumkv_operator.apply import NotOwned
from quorumkv_operator.settings import Settings
from quorumkv_operator.status import Member

LOG = logging.getLogger("test")


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.secrets: dict[str, dict[str, Any]] = {}
        self.applied: list[str] = []
        self.expanded: list[tuple[list[str], str]] = []
        self.foreign: set[tuple[str, str]] = set()  # objects of the names we need, not ours

    def apply(self, manifest: dict[str, Any]) -> bool:
        key = (manifest["kind"], manifest["metadata"]["name"])
        if key in self.foreign:
            raise NotOwned(f"{key[0]}/{key[1]} exists and does not belong to this KVCluster")
        self.applied.append(f"{key[0]}/{key[1]}")
        changed = self.objects.get(key) != manifest
        self.objects[key] = copy.deepcopy(manifest)
        return changed

    def ensure_secret(self, manifest: dict[str, Any]) -> bool:
        name = manifest["metadata"]["name"]
        if name in self.secrets:
            return False
        self.secrets[name] = manifest
        return True

    def statefulset(self, name: str, namespace: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.objects.get(("StatefulSet", name)))

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return []

    def secret_value(self, name: str, namespace: str, key: str) -> str | None:
        value = self.secrets.get(name, {}).get("stringData", {}).get(key)
        return str(value) if value is not None else None

    def claims(self, namespace: str, prefix: str) -> list[str]:
        return []

    def delete_claim(self, namespace: str, name: str) -> None:
        raise AssertionError("no claim is deleted here")

    def expand_claims(self, namespace: str, claims: list[str], size: str) -> list[str]:
        self.expanded.append((claims, size))
        return ["data-demo-0: 403 Forbidden"]


class FakeKubeWithStatus(FakeKube):
    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__()
        self.body = body
        self.written: list[dict[str, Any]] = []

    def kvcluster(self, name: str, namespace: str) -> dict[str, Any]:
        return copy.deepcopy(self.body)

    def patch_status(self, name: str, namespace: str, status: dict[str, Any],
                     resource_version: str | None = None) -> bool:
        self.written.append(status)
        return True


async def test_a_status_refresh_leaves_a_scale_in_progress_to_the_full_cycles() -> None:
    """The members recorded last cycle may have left already; counting them made a 3→1
    scale-down report QuorumLost for seconds while the cluster served (found on
    Kubernetes)."""
    kube = FakeKube()
    st, _ = await run(kube, kvcluster(spec={"replicas": 3}))
    scaling_down = kvcluster(spec={"replicas": 1}, status={
        **st, "scaling": {**st["scaling"], "phase": "ChangingMembership"}})
    assert await reconcile.refresh(FakeKubeWithStatus(scaling_down), Settings(),  # type: ignore[arg-type]
                                   "ns", "demo") is None
    steady = FakeKubeWithStatus(kvcluster(spec={"replicas": 3}, status=st))
    assert await reconcile.refresh(steady, Settings(), "ns", "demo") is not None  # type: ignore[arg-type]


async def run(kube: FakeKube, body: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    return await reconcile.reconcile(kube, Settings(), body, LOG)  # type: ignore[arg-type]


async def test_create_then_rerun_changes_nothing() -> None:
    kube = FakeKube()
    st, events = await run(kube, kvcluster(spec={"replicas": 3}))
    assert [e[1] for e in events] == ["SecretCreated", "Created"]
    assert st["phase"] == "Pending" and st["replicas"] == 3 and "lastProbeTime" in st
    token = kube.secrets["demo-token"]["stringData"]["token"]
    assert len(token) >= 40
    _, events2 = await run(kube, kvcluster(spec={"replicas": 3}, status=st))
    assert events2 == []
    assert kube.secrets["demo-token"]["stringData"]["token"] == token


async def test_a_deleted_token_secret_is_not_replaced_by_another_token() -> None:
    """Running replicas keep the token they have; one restarted with a new one could not
    talk to them. So a missing Secret is reported, with how to restore it, never remade."""
    kube = FakeKube()
    st, _ = await run(kube, kvcluster(spec={"replicas": 3}))
    del kube.secrets["demo-token"]
    _, events = await run(kube, kvcluster(spec={"replicas": 3}, status=st))
    assert "demo-token" not in kube.secrets
    missing = [e for e in events if e[1] == "PeerTokenMissing"]
    assert len(missing) == 1 and missing[0][0] == "Warning"
    assert "kubectl -n ns create secret generic demo-token" in missing[0][2]
    assert "kubectl -n ns exec demo-0" in missing[0][2]  # right from any namespace


async def test_an_object_of_someone_else_is_left_alone_and_reported() -> None:
    """A Service `demo` that the user had before the KVCluster `demo` is not taken over
    (a later `kubectl delete kvc demo` would delete it); the rest is made as usual."""
    kube = FakeKube()
    kube.foreign.add(("Service", "demo"))
    _, events = await run(kube, kvcluster(spec={"replicas": 3}))
    assert "Service/demo" not in kube.applied and "StatefulSet/demo" in kube.applied
    conflicts = [e for e in events if e[1] == "ResourceConflict"]
    assert len(conflicts) == 1 and conflicts[0][0] == "Warning"
    assert "Service/demo exists and does not belong to this KVCluster" in conflicts[0][2]


async def test_scale_request_without_reachable_replicas_waits() -> None:
    """No replica answers (here: no pods at all): membership is never changed blind."""
    kube = FakeKube()
    st, _ = await run(kube, kvcluster(spec={"replicas": 3}))
    assert st["bootstrapMembers"] == 3 and st["scaling"]["phase"] == "Idle"
    st, events = await run(kube, kvcluster(spec={"replicas": 5}, status=st, generation=2))
    sts = kube.objects[("StatefulSet", "demo")]
    assert sts["spec"]["replicas"] == 3
    peers = next(e["value"] for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]
                 if e["name"] == "QUORUMKV_PEERS")
    assert peers.count("=http://") == 3
    assert kube.objects[("PodDisruptionBudget", "demo")]["spec"]["maxUnavailable"] == 1
    assert st["replicas"] == 3 and st["observedGeneration"] == 2
    blocked = next(c for c in st["conditions"] if c["type"] == "ScalingBlocked")
    assert (blocked["status"], blocked["reason"]) == ("True", "MembershipUnknown")
    assert ("Warning", "MembershipUnknown") in [(e[0], e[1]) for e in events]


async def test_even_replicas_warn_once_at_creation() -> None:
    kube = FakeKube()
    st, events = await run(kube, kvcluster(spec={"replicas": 4}))
    assert ("Warning", "EvenReplicas") in [(e[0], e[1]) for e in events]
    _, events = await run(kube, kvcluster(spec={"replicas": 4}, status=st))
    assert "EvenReplicas" not in [e[1] for e in events]


async def test_storage_growth_expands_existing_claims() -> None:
    kube = FakeKube()
    st, _ = await run(kube, kvcluster(spec={"replicas": 3}))
    _, events = await run(kube, kvcluster(spec={"replicas": 3, "storage": {"size": "2Gi"}},
                                          status=st))
    assert kube.expanded == [(["data-demo-0", "data-demo-1", "data-demo-2"], "2Gi")]
    sts = kube.objects[("StatefulSet", "demo")]
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"] == {
        "storage": "1Gi"}
    assert ("Warning", "VolumeExpansionFailed") in [(e[0], e[1]) for e in events]


async def test_scale_up_cycle_by_cycle_against_fake_replicas(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The I/O edges of a 3→5 scale: StatefulSet grown with the same peer list, the change
    asked of demo-0 with the new members' DNS peer URLs, a refusal reported once, the PDB
    following the members."""
    kube = FakeKube()
    st, _ = await run(kube, kvcluster(spec={"replicas": 3}))
    config: dict[str, Any] = {"epoch": 1, "members": ["0", "1", "2"], "joining": None}
    asked: list[tuple[str, dict[str, str]]] = []
    refuse: list[str] = []

    async def observe_members(cluster: str, pods: Any, members: int,
                              **_: Any) -> list[Member]:
        n = kube.objects[("StatefulSet", "demo")]["spec"]["replicas"]
        return [Member(ordinal=i, name=f"demo-{i}", exists=True, pod_ready=True,
                       reply={"epoch": config["epoch"],
                              "ready": str(i) in config["members"]},
                       url=f"http://10.0.0.{i}:8080") for i in range(n)]

    async def memberships(members: list[Member], token: str | None,
                          **_: Any) -> dict[int, Any]:
        assert token
        return {m.ordinal: {"config": config, "change": None} for m in members}

    async def change_membership(member: Member, token: str, target: dict[str, str],
                                **_: Any) -> tuple[Any, str]:
        asked.append((member.name, target))
        if refuse:
            return None, refuse[0]
        config.update(epoch=3, members=sorted(target))
        return {}, ""

    monkeypatch.setattr(reconcile, "observe_members", observe_members)
    monkeypatch.setattr(reconcile, "memberships", memberships)
    monkeypatch.setattr(reconcile, "change_membership", change_membership)
    peers_before = kube.objects[("StatefulSet", "demo")]["spec"]["template"]

    body = kvcluster(spec={"replicas": 5}, status=st, generation=2)
    st, events = await run(kube, body)  # 1: grow the StatefulSet
    sts = kube.objects[("StatefulSet", "demo")]
    assert sts["spec"]["replicas"] == 5 and sts["spec"]["template"] == peers_before
    assert st["scaling"]["phase"] == "AddingReplicas" and st["replicas"] == 3
    assert {"ScalingUp", "AddingReplicas"} <= {e[1] for e in events}

    refuse.append("demo-0 refused (409): a change to ['0', '1', '2', '9'] is running")
    st, events = await run(kube, kvcluster(spec={"replicas": 5}, status=st, generation=2))
    assert [e[1] for e in events if e[0] == "Warning"] == ["MembershipChangeRefused"]
    assert st["scaling"]["message"].startswith("demo-0 refused")
    st, events = await run(kube, kvcluster(spec={"replicas": 5}, status=st, generation=2))
    assert "MembershipChangeRefused" not in [e[1] for e in events]
    refuse.clear()

    st, events = await run(kube, kvcluster(spec={"replicas": 5}, status=st, generation=2))
    name, target = asked[-1]
    assert name == "demo-0"
    assert target == {str(i): f"http://demo-{i}.demo-peers.ns.svc.cluster.local:8080"
                      for i in range(5)}
    st, events = await run(kube, kvcluster(spec={"replicas": 5}, status=st, generation=2))
    assert st["replicas"] == 5 and st["scaling"]["phase"] == "Idle"
    assert {"MembershipChanged", "ScalingDone"} <= {e[1] for e in events}
    assert kube.objects[("PodDisruptionBudget", "demo")]["spec"]["maxUnavailable"] == 2
