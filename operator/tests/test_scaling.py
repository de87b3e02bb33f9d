"""The scaling refusal: a running cluster keeps its membership until #5 lands."""

from __future__ import annotations

from conftest import kvcluster
from quorumkv_operator import builders
from quorumkv_operator.model import ClusterSpec
from quorumkv_operator.reconcile import _claim_size, decide_scaling, sts_members
from quorumkv_operator.scaling import decide


def test_creation_with_any_count_is_allowed() -> None:
    for n in (1, 2, 3, 5, 9):
        d = decide(requested=n, current_members=None)
        assert (d.members, d.blocked) == (n, False)


def test_unchanged_count_is_not_blocked() -> None:
    assert decide(requested=3, current_members=3).blocked is False


def test_scale_up_and_down_are_refused_keeping_current_members() -> None:
    for requested in (1, 2, 4, 5):
        d = decide(requested=requested, current_members=3)
        assert d.blocked and d.members == 3
        assert "MembershipChange" not in d.message  # the reason is in the condition
        assert "set spec.replicas back to 3" in d.message


def test_deleted_statefulset_is_recreated_with_the_recorded_membership() -> None:
    d = decide(requested=5, current_members=None, recorded_members=3)
    assert d.blocked and d.members == 3


def test_statefulset_wins_over_recorded_status() -> None:
    d = decide(requested=3, current_members=3, recorded_members=5)
    assert not d.blocked and d.members == 3


def test_decide_from_objects() -> None:
    body = kvcluster(spec={"replicas": 5}, status={"replicas": 3})
    sts = {"spec": {"replicas": 3, "volumeClaimTemplates": [
        {"metadata": {"name": "data"},
         "spec": {"resources": {"requests": {"storage": "1Gi"}}}}]}}
    d = decide_scaling(body, sts, 5)
    assert d.blocked and d.members == 3
    assert _claim_size(sts) == "1Gi"
    assert _claim_size(None) is None


def test_membership_is_read_from_the_peer_list_not_spec_replicas() -> None:
    """`kubectl scale sts` is drift, not a membership change: the peer list decides."""
    spec = ClusterSpec.from_body(kvcluster(spec={"replicas": 3}), "img")
    sts = builders.statefulset(spec, members=3, cluster_domain="cluster.local")
    sts["spec"]["replicas"] = 5
    assert sts_members(sts) == 3
    d = decide_scaling(kvcluster(spec={"replicas": 3}), sts, 3)
    assert not d.blocked and d.members == 3
    assert sts_members(None) is None
