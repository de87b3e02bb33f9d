"""`helm lint` and `helm template` of the chart run clean, and render what we promise."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped,unused-ignore]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "quorumkv"
CACHE = Path(os.environ.get("QUORUMKV_CACHE",
                            Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                            / "quorumkv"))


def helm_binary() -> str:
    for cand in (CACHE / "bin" / "helm", shutil.which("helm")):
        if cand and Path(cand).is_file():
            return str(cand)
    pytest.fail(f"helm not found in {CACHE / 'bin'} or PATH; install it with: "
                "bash e2e/tools/ensure-go-tools.sh helm")


def helm(*args: str) -> str:
    proc = subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc.stdout


def render(*sets: str) -> list[dict[str, Any]]:
    args = ["template", "qkv", str(CHART), "-n", "ops", "--kube-version", "1.34.0"]
    for s in sets:
        args += ["--set", s]
    return [d for d in yaml.safe_load_all(helm(*args)) if d]


@pytest.mark.parametrize("sets", [(), ("watch.clusterWide=true",), ("replicaCount=2",),
                                  ("replicaCount=2", "watch.clusterWide=true")])
def test_lint_is_clean(sets: tuple[str, ...]) -> None:
    args = ["lint", str(CHART), "--strict", "--kube-version", "1.34.0"]
    for s in sets:
        args += ["--set", s]
    out = helm(*args)
    assert "0 chart(s) failed" in out
    assert "[WARNING]" not in out and "[ERROR]" not in out


def kinds(docs: list[dict[str, Any]]) -> list[str]:
    return [d["kind"] for d in docs]


def deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    d: dict[str, Any] = next(d for d in docs if d["kind"] == "Deployment")
    return d


def test_default_is_namespaced_and_standalone() -> None:
    docs = render()
    assert "ClusterRole" not in kinds(docs) and "ClusterRoleBinding" not in kinds(docs)
    role = next(d for d in docs if d["kind"] == "Role")
    assert role["metadata"]["namespace"] == "ops"
    resources = {r for rule in role["rules"] for r in rule["resources"]}
    assert {"kvclusters", "kvclusters/status", "statefulsets", "services",
            "poddisruptionbudgets", "secrets", "pods", "events"} <= resources
    assert not any("kopfpeerings" in r for r in resources)
    assert not any("*" in rule["verbs"] or "*" in rule["resources"] for rule in role["rules"])
    dep = deployment(docs)
    assert dep["spec"]["strategy"]["type"] == "Recreate"
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["quorumkv-operator"]
    assert "--namespace=ops" in c["args"] and "--standalone" in c["args"]
    assert "KopfPeering" not in kinds(docs)


def test_security_contexts_are_hardened() -> None:
    dep = deployment(render())
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = pod["containers"][0]["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}


def test_cluster_wide_uses_a_cluster_role() -> None:
    docs = render("watch.clusterWide=true")
    assert "ClusterRole" in kinds(docs) and "Role" not in kinds(docs)
    c = deployment(docs)["spec"]["template"]["spec"]["containers"][0]
    assert "--all-namespaces" in c["args"]


def test_extra_namespaces_get_their_own_roles() -> None:
    docs = render("watch.namespaces={a,b}")
    roles = sorted(d["metadata"]["namespace"] for d in docs if d["kind"] == "Role")
    assert roles == ["a", "b", "ops"]
    c = deployment(docs)["spec"]["template"]["spec"]["containers"][0]
    assert {"--namespace=ops", "--namespace=a", "--namespace=b"} <= set(c["args"])


def test_ha_mode_has_peering() -> None:
    docs = render("replicaCount=2")
    peering = next(d for d in docs if d["kind"] == "KopfPeering")
    assert peering["metadata"]["namespace"] == "ops"
    dep = deployment(docs)
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert "--peering=quorumkv-operator" in c["args"]
    assert any(e["name"] == "POD_NAME" for e in c["env"])
    role = next(d for d in docs if d["kind"] == "Role")
    assert any("kopfpeerings" in rule["resources"] for rule in role["rules"])
    docs = render("replicaCount=2", "watch.clusterWide=true")
    assert "ClusterKopfPeering" in kinds(docs)


def test_helm_test_hook_targets_the_configured_cluster() -> None:
    docs = render("test.kvcluster=other")
    pod = next(d for d in docs if d["kind"] == "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    assert env["ENDPOINT"] == "http://other.ops.svc:8080"


def test_default_replica_image_is_the_operator_image() -> None:
    docs = render("image.tag=1.2.3")
    c = deployment(docs)["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert c["image"] == "quorumkv:1.2.3"
    assert env["QUORUMKV_OPERATOR_DEFAULT_IMAGE"] == "quorumkv:1.2.3"


def test_template_works_offline_without_a_kube_version() -> None:
    """GitOps users render without a cluster: no kubeVersion gate may break that."""
    out = helm("template", "qkv", str(CHART))
    assert "kind: Deployment" in out


def test_values_schema_rejects_typos() -> None:
    proc = subprocess.run([helm_binary(), "template", "qkv", str(CHART), "--kube-version",
                           "1.34.0", "--set", "replicaCont=2"], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "replicaCont" in proc.stderr
