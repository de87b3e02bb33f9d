"""Shared fixtures for the operator's unit tests (pure code, no cluster)."""

from __future__ import annotations

from typing import Any

import pytest
from quorumkv_operator.model import ClusterSpec


def kvcluster(name: str = "demo", namespace: str = "ns", spec: dict[str, Any] | None = None,
              status: dict[str, Any] | None = None, generation: int = 1) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "quorumkv.dev/v1alpha1", "kind": "KVCluster",
        "metadata": {"name": name, "namespace": namespace, "uid": "uid-1",
                     "generation": generation},
        "spec": spec if spec is not None else {},
    }
    if status is not None:
        body["status"] = status
    return body


@pytest.fixture
def spec() -> ClusterSpec:
    return ClusterSpec.from_body(kvcluster(spec={"replicas": 3}), "quorumkv:dev")
