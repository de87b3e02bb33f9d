"""e2e fixtures: a real cluster (any KUBECONFIG), the chart installed into a fresh namespace.

Needs only a kubeconfig whose cluster has the image loaded (default `quorumkv:dev`, see
e2e/README.md). Fails fast, with the reason, when there is no reachable cluster. Teardown
deletes the KVClusters (while the operator still runs), uninstalls the chart and deletes
the namespaces; logs and events are kept in e2e/_artifacts/<namespace>/.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kube import CHART, ROOT, Kubectl, find_tool, run, wait_for

IMAGE = os.environ.get("QUORUMKV_E2E_IMAGE", "quorumkv:dev")
PULL_POLICY = os.environ.get("QUORUMKV_E2E_PULL_POLICY", "IfNotPresent")
# Storage that ignores fsGroup (e.g. the in-tree host-path provisioner without the local
# cluster's pv-perms helper) needs the opt-in volume-permissions init container: set "true".
VOLUME_PERMISSIONS = os.environ.get("QUORUMKV_E2E_VOLUME_PERMISSIONS_INIT", "false")
RELEASE = "quorumkv"
ARTIFACTS = ROOT / "e2e" / "_artifacts"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def kubectl() -> Kubectl:
    cfg = os.environ.get("KUBECONFIG")
    if not cfg:
        pytest.fail("e2e needs a cluster: set KUBECONFIG (for the local cluster: "
                    "source e2e/localcluster/env.sh after e2e/localcluster/up.sh)")
    missing = [p for p in cfg.split(os.pathsep) if p and not Path(p).is_file()]
    if missing:
        pytest.fail(f"KUBECONFIG points at missing file(s): {missing}")
    binary = find_tool("kubectl")
    if binary is None:
        pytest.fail("kubectl not found on PATH or in the e2e tool cache")
    k = Kubectl(binary)
    try:
        k("get", "--raw", "/readyz", timeout=15)
    except (AssertionError, subprocess.TimeoutExpired) as e:
        pytest.fail(f"the cluster in KUBECONFIG={cfg} does not answer: {e}")
    return k


@pytest.fixture(scope="session")
def helm_bin() -> str:
    binary = find_tool("helm")
    if binary is None:
        pytest.fail("helm not found; install it with: bash e2e/tools/ensure-go-tools.sh helm")
    return binary


def _image_parts() -> tuple[str, str]:
    repo, _, tag = IMAGE.rpartition(":")
    return (repo, tag) if repo and "/" not in tag else (IMAGE, "latest")


def _dump_artifacts(k: Kubectl, namespace: str) -> None:
    out = ARTIFACTS / namespace
    out.mkdir(parents=True, exist_ok=True)
    for name, args in {
        "operator.log": ["logs", "deploy/quorumkv-operator", "--all-containers", "--tail=2000"],
        "replicas.log": ["logs", "-l", "app.kubernetes.io/name=quorumkv", "--prefix",
                         "--all-containers", "--tail=500", "--max-log-requests=20"],
        "events.txt": ["get", "events", "--sort-by=.lastTimestamp"],
        "objects.yaml": ["get", "kvc,sts,svc,pdb,pvc,pods", "-o", "yaml"],
    }.items():
        proc = k.in_namespace(namespace)(*args, check=False)
        (out / name).write_text(proc.stdout + proc.stderr)


def _delete_kvclusters(k: Kubectl, namespace: str) -> None:
    ns = k.in_namespace(namespace)
    ns("delete", "kvc", "--all", "--wait=true", "--timeout=90s", check=False, timeout=120)


@pytest.fixture(scope="session")
def namespace(kubectl: Kubectl, helm_bin: str) -> Iterator[str]:
    """A fresh namespace with the chart installed and the operator running in it."""
    ns = f"qkv-e2e-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", ns)
    # CRDs in a chart's crds/ are not upgraded by helm: apply them, so a rerun tests these.
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    repo, tag = _image_parts()
    try:
        run([helm_bin, "install", RELEASE, str(CHART), "-n", ns, "--wait", "--timeout", "180s",
             "--set", f"image.repository={repo}", "--set", f"image.tag={tag}",
             "--set", f"image.pullPolicy={PULL_POLICY}", "--set", "resyncInterval=15",
             "--set", f"volumePermissionsInit={VOLUME_PERMISSIONS}"],
            timeout=240)
        yield ns
    finally:
        _dump_artifacts(kubectl, ns)
        _delete_kvclusters(kubectl, ns)
        run([helm_bin, "uninstall", RELEASE, "-n", ns, "--wait"], check=False, timeout=180)
        kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.fixture(scope="session")
def unwatched_namespace(kubectl: Kubectl) -> Iterator[str]:
    """A namespace no operator watches: the API server's validation alone is tested there."""
    ns = f"qkv-e2e-val-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", ns)
    try:
        yield ns
    finally:
        kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.fixture(scope="session")
def k(kubectl: Kubectl, namespace: str) -> Kubectl:
    return kubectl.in_namespace(namespace)


@pytest.fixture(scope="session")
def operator_ready(k: Kubectl) -> None:
    wait_for(lambda: k("rollout", "status", "deploy/quorumkv-operator", "--timeout=5s",
                       check=False).returncode == 0,
             timeout=120, what="the operator Deployment to be ready")
