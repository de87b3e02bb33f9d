"""The CRD: one source of truth (the chart's crds/), the copy at crds/ byte-identical.

Sync after editing: cp charts/quorumkv/crds/*.yaml crds/
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped,unused-ignore]

ROOT = Path(__file__).resolve().parents[2]
CHART_CRDS = ROOT / "charts" / "quorumkv" / "crds"
TOP_CRDS = ROOT / "crds"


def crd() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(
        (CHART_CRDS / "kvclusters.quorumkv.dev.yaml").read_text())
    return doc


def test_chart_and_top_level_crds_are_identical() -> None:
    chart = sorted(p.name for p in CHART_CRDS.glob("*.yaml"))
    top = sorted(p.name for p in TOP_CRDS.glob("*.yaml"))
    assert chart == top, "run: cp charts/quorumkv/crds/*.yaml crds/"
    for name in chart:
        assert (CHART_CRDS / name).read_bytes() == (TOP_CRDS / name).read_bytes(), (
            f"{name} differs; run: cp charts/quorumkv/crds/*.yaml crds/")


def test_names_and_subresources() -> None:
    c = crd()
    assert c["metadata"]["name"] == "kvclusters.quorumkv.dev"
    names = c["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == (
        "KVCluster", "kvclusters", ["kvc"])
    assert c["spec"]["scope"] == "Namespaced"
    (v,) = c["spec"]["versions"]
    assert v["name"] == "v1alpha1" and v["served"] and v["storage"]
    assert v["subresources"]["status"] == {}
    assert v["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector"}
    cols = [col["name"] for col in v["additionalPrinterColumns"]]
    for want in ("Replicas", "Ready", "Phase", "Available", "Age"):
        assert want in cols


def test_spec_defaults_and_bounds() -> None:
    spec = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    props = spec["properties"]
    assert spec["default"] == {}
    assert (props["replicas"]["default"], props["replicas"]["minimum"],
            props["replicas"]["maximum"]) == (3, 1, 9)
    storage = props["storage"]["properties"]
    assert storage["size"]["default"] == "1Gi"
    assert storage["reclaimPolicy"]["enum"] == ["Retain", "Delete"]
    assert storage["reclaimPolicy"]["default"] == "Retain"
    messages = [r["message"] for r in storage["size"]["x-kubernetes-validations"]]
    assert any("may not shrink" in m for m in messages)
    assert any("immutable" in r["message"]
               for r in storage["storageClassName"]["x-kubernetes-validations"])


def test_status_schema_has_what_the_operator_writes() -> None:
    """Anything not in the structural schema is pruned silently: keep them in step."""
    from quorumkv_operator import status as st
    from quorumkv_operator.scaling import Plan

    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    written = st.compute(st.Snapshot(
        name="d", generation=1, selector="s", scaling=Plan.steady(1),
        rollout=st.RolloutState(), previous={}, now="2026-01-01T00:00:00Z",
        members=[st.Member(ordinal=0, name="d-0", exists=True, pod_ready=True,
                           reply={"epoch": 1, "ready": True, "members": []}),
                 st.Member(ordinal=1, name="d-1", error="boom")]))
    written["lastProbeTime"] = "2026-01-01T00:00:00Z"
    written["bootstrapMembers"] = 1
    assert set(written) <= set(schema["properties"])
    scaling_props = schema["properties"]["scaling"]["properties"]
    assert set(written["scaling"]) <= set(scaling_props)
    assert set(written["scaling"]["last"]) <= set(scaling_props["last"]["properties"])
    member_props = set(schema["properties"]["members"]["items"]["properties"])
    for m in written["members"]:
        assert set(m) <= member_props
    cond_props = set(schema["properties"]["conditions"]["items"]["properties"])
    for c in written["conditions"]:
        assert set(c) <= cond_props
