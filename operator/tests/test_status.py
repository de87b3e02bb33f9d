"""Status logic: conditions, phase, transitions and lastTransitionTime."""

from __future__ import annotations

from typing import Any

from quorumkv_operator import scaling as sc
from quorumkv_operator import status
from quorumkv_operator.scaling import Plan

T0, T1, T2 = "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z", "2026-01-01T00:02:00Z"
DONE = status.RolloutState(exists=True, observed=True, updated_replicas=3, revisions_match=True)
REPLY = {"node_id": "0", "epoch": 1, "ready": True, "quorum": 2,
         "members": [{"id": "0", "reachable": True}, {"id": "1", "reachable": True},
                     {"id": "2", "reachable": False}]}


def members(ready: int, n: int = 3, replies: bool = False) -> list[status.Member]:
    return [status.Member(ordinal=i, name=f"demo-{i}", exists=True, pod_ready=i < ready,
                          pod_phase="Running", reply=REPLY if replies and i < ready else None)
            for i in range(n)]


def compute(ms: list[status.Member], previous: dict[str, Any] | None = None, now: str = T0,
            scaling: Plan | None = None,
            rollout: status.RolloutState = DONE) -> dict[str, Any]:
    return status.compute(status.Snapshot(
        name="demo", generation=4, selector="sel", rollout=rollout,
        scaling=scaling or Plan.steady(3),
        members=ms, previous=previous or {}, now=now))


def cond(st: dict[str, Any], ctype: str) -> dict[str, Any]:
    c: dict[str, Any] = next(c for c in st["conditions"] if c["type"] == ctype)
    return c


def test_new_cluster_is_pending_not_degraded() -> None:
    st = compute(members(0), rollout=status.RolloutState())
    assert st["phase"] == "Pending"
    assert cond(st, "Available")["status"] == "False"
    assert cond(st, "Available")["reason"] == "WaitingForQuorum"
    assert cond(st, "Progressing")["status"] == "True"
    assert cond(st, "Degraded")["status"] == "False"
    assert (st["replicas"], st["readyReplicas"], st["quorum"]) == (3, 0, 2)
    assert st["observedGeneration"] == 4 and st["selector"] == "sel"


def test_all_ready_is_running() -> None:
    st = compute(members(3))
    assert st["phase"] == "Running"
    assert cond(st, "Available")["status"] == "True"
    assert cond(st, "Progressing")["status"] == "False"
    assert cond(st, "Degraded")["status"] == "False"
    assert cond(st, "ScalingBlocked")["status"] == "False"
    assert all(c["observedGeneration"] == 4 for c in st["conditions"])


def test_losing_one_of_three_is_degraded_but_available() -> None:
    before = compute(members(3))
    st = compute(members(2), previous=before, now=T1)
    assert st["phase"] == "Degraded"
    assert cond(st, "Available")["status"] == "True"
    assert cond(st, "Degraded")["status"] == "True"
    assert "demo-2" in cond(st, "Degraded")["message"]
    assert cond(st, "Degraded")["lastTransitionTime"] == T1
    assert cond(st, "Available")["lastTransitionTime"] == T0  # unchanged status keeps its time


def test_losing_quorum_is_unavailable_after_having_been_available() -> None:
    before = compute(members(3))
    st = compute(members(1), previous=before, now=T1)
    assert st["phase"] == "Unavailable"
    assert cond(st, "Available")["reason"] == "QuorumLost"
    events = status.transition_events(before["conditions"], st["conditions"])
    assert ("Warning", "QuorumLost") in [(e[0], e[1]) for e in events]
    assert ("Warning", "MembersNotReady") in [(e[0], e[1]) for e in events]


def test_recovery_emits_events_and_keeps_times_while_stable() -> None:
    s0 = compute(members(3))
    s1 = compute(members(2), previous=s0, now=T1)
    s2 = compute(members(3), previous=s1, now=T2)
    assert s2["phase"] == "Running"
    assert cond(s2, "Degraded")["lastTransitionTime"] == T2
    assert cond(s2, "Available")["lastTransitionTime"] == T0
    events = status.transition_events(s1["conditions"], s2["conditions"])
    assert [(e[0], e[1]) for e in events] == [("Normal", "AllMembersReady")]
    s3 = compute(members(3), previous=s2, now="2026-01-01T00:03:00Z")
    assert s3["conditions"] == s2["conditions"]
    assert status.transition_events(s2["conditions"], s3["conditions"]) == []


def test_first_quorum_event_and_no_noise_while_creating() -> None:
    s0 = compute(members(0), rollout=status.RolloutState())
    assert status.transition_events([], s0["conditions"]) == []
    s1 = compute(members(3), previous=s0, now=T1)
    kinds = [(e[0], e[1]) for e in status.transition_events(s0["conditions"], s1["conditions"])]
    assert kinds == [("Normal", "QuorumAvailable")]


def test_quorum_during_creation_is_available_but_still_pending() -> None:
    st = compute(members(2), rollout=status.RolloutState())
    assert cond(st, "Available")["status"] == "True"
    assert st["phase"] == "Pending"
    assert cond(st, "Degraded")["status"] == "False"
    assert cond(st, "Progressing")["reason"] == "Creating"


def test_answers_without_a_ready_pod_are_not_available() -> None:
    """The client Service routes only to ready pods: no ready pod, no availability."""
    ms = [status.Member(ordinal=i, name=f"demo-{i}", exists=True, pod_ready=False,
                        reply=REPLY) for i in range(3)]
    assert cond(compute(ms), "Available")["status"] == "False"


def test_a_replica_that_says_not_ready_does_not_count() -> None:
    not_ready = {**REPLY, "ready": False}
    ms = [status.Member(ordinal=0, name="demo-0", exists=True, pod_ready=True, reply=REPLY),
          status.Member(ordinal=1, name="demo-1", exists=True, pod_ready=True,
                        reply=not_ready),
          status.Member(ordinal=2, name="demo-2", exists=True, pod_ready=False, reply=None)]
    st = compute(ms)
    assert cond(st, "Available")["status"] == "False"
    assert st["members"][1]["answering"] is True and st["members"][1]["replicaReady"] is False


def test_replica_answers_win_over_pod_readiness() -> None:
    """When the operator can reach replicas, Available follows their answers."""
    ms = [status.Member(ordinal=0, name="demo-0", exists=True, pod_ready=True, reply=REPLY),
          status.Member(ordinal=1, name="demo-1", exists=True, pod_ready=True, reply=None),
          status.Member(ordinal=2, name="demo-2", exists=True, pod_ready=True, reply=None)]
    st = compute(ms)
    assert cond(st, "Available")["status"] == "False"
    m0 = st["members"][0]
    assert m0["answering"] and m0["epoch"] == 1 and m0["reachableMembers"] == 2
    assert m0["knownMembers"] == 3 and m0["replicaReady"] is True


def test_pod_readiness_is_the_fallback_when_nothing_answers() -> None:
    st = compute(members(2, replies=False))
    assert cond(st, "Available")["status"] == "True"
    assert st["members"][2]["answering"] is False


def test_rollout_in_progress_is_updating() -> None:
    rolling = status.RolloutState(exists=True, observed=True, updated_replicas=1,
                                  revisions_match=False)
    st = compute(members(3), previous=compute(members(3)), rollout=rolling)
    assert st["phase"] == "Updating"
    assert cond(st, "Progressing")["reason"] == "RollingOut"


def test_the_pod_a_rollout_restarts_is_updating_not_missing() -> None:
    """A rolling update restarts one pod at a time: no Degraded warning for each of them
    (found on Kubernetes); two not ready at once still is one."""
    rolling = status.RolloutState(exists=True, observed=True, updated_replicas=1,
                                  revisions_match=False)
    before = compute(members(3))
    st = compute(members(2), previous=before, rollout=rolling)
    assert st["phase"] == "Updating"
    assert cond(st, "Degraded")["status"] == "False"
    assert cond(st, "Degraded")["reason"] == "RollingOut"
    events = status.transition_events(before["conditions"], st["conditions"])
    assert "MembersNotReady" not in [e[1] for e in events]
    st = compute(members(1), previous=before, rollout=rolling)
    assert cond(st, "Degraded")["status"] == "True"  # (and no quorum: Unavailable)


def test_rollout_state_from_statefulset() -> None:
    sts = {"metadata": {"generation": 2},
           "status": {"observedGeneration": 2, "updatedReplicas": 3,
                      "currentRevision": "a", "updateRevision": "a"}}
    assert status.RolloutState.from_statefulset(sts) == DONE
    assert status.RolloutState.from_statefulset(None).exists is False


def blocked_plan() -> Plan:
    return sc.resolve(sc.Observed(
        requested=5, sts_replicas=5, config=sc.Config(1, frozenset({0, 1, 2})), changes={},
        replicas={k: sc.Replica(alive=True, ready=k < 1) for k in range(5)},
        previous=dict(Plan.steady(3).status), now=T1))


def test_scaling_blocked_condition_and_phase() -> None:
    d = blocked_plan()
    before = compute(members(3))
    st = compute(members(3), previous=before, scaling=d, now=T1)
    assert st["phase"] == "ScalingBlocked"
    assert st["replicas"] == 3
    c = cond(st, "ScalingBlocked")
    assert (c["status"], c["reason"]) == ("True", "QuorumAtRisk")
    assert "a majority" in c["message"]
    assert cond(st, "Progressing")["reason"] == "ScalingUp"
    events = status.transition_events(before["conditions"], st["conditions"])
    assert [(e[0], e[1]) for e in events] == [("Warning", "QuorumAtRisk")]
    cleared = compute(members(3), previous=st, now=T2)
    assert [e[1] for e in status.transition_events(st["conditions"], cleared["conditions"])] \
        == ["ScalingUnblocked"]


def test_scaling_progress_in_conditions_phase_and_roles() -> None:
    plan = sc.resolve(sc.Observed(
        requested=5, sts_replicas=5,
        config=sc.Config(2, frozenset({0, 1, 2}), frozenset({0, 1, 2, 3, 4})),
        changes={0: sc.Change(frozenset(range(5)), "rescanning", 2, 40, 100)},
        replicas={k: sc.Replica(alive=True, ready=True) for k in range(5)},
        previous={**Plan.steady(3).status, "phase": "ChangingMembership", "driver": "0",
                  "from": ["0", "1", "2"], "startedAt": T0}, now=T1))
    ms = [status.Member(ordinal=i, name=f"demo-{i}", exists=True, pod_ready=i < 3,
                        pod_phase="Running") for i in range(5)]
    st = compute(ms, previous=compute(members(3)), scaling=plan, now=T1)
    assert st["phase"] == "Scaling" and st["replicas"] == 3
    p = cond(st, "Progressing")
    assert (p["status"], p["reason"]) == ("True", "ScalingUp")
    assert "40/100 keys rescanned" in p["message"]
    assert cond(st, "Degraded")["status"] == "False", "non-members are not missing members"
    assert [m["role"] for m in st["members"]] == ["Member"] * 3 + ["Joining"] * 2
    assert st["scaling"]["rescanned"] == 40 and st["scaling"]["startedAt"] == T0


def test_unavailable_beats_scaling_blocked_in_phase() -> None:
    st = compute(members(1), previous=compute(members(3)), scaling=blocked_plan())
    assert st["phase"] == "Unavailable"


def test_member_list_marks_missing_pods() -> None:
    ms = [status.Member(ordinal=0, name="demo-0", exists=True, pod_ready=True),
          status.Member(ordinal=1, name="demo-1")]
    st = status.compute(status.Snapshot(
        name="demo", generation=1, selector="s", scaling=Plan.steady(2),
        rollout=DONE, members=ms, previous={}, now=T0))
    assert st["members"][1]["podPhase"] == "Missing"
