"""The scaling resolver (pure): every step of 3→5 and 5→3, resumed from every intermediate
state (an operator killed at any point), a driver killed mid-change, unsafe requests, and a
new request while a change is in progress. A small model of the cluster plays the replicas
and the StatefulSet controller."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest
from conftest import kvcluster
from quorumkv_operator import builders, scaling
from quorumkv_operator.model import ClusterSpec
from quorumkv_operator.reconcile import _claim_size, bootstrap_members, sts_members
from quorumkv_operator.scaling import (
    ADDING,
    CHANGING,
    IDLE,
    RELEASING,
    REMOVING,
    Change,
    ChangeMembership,
    Config,
    DeleteClaims,
    Observed,
    Replica,
    resolve,
)

NOW = "2026-01-01T00:00:00Z"


def r(*ordinals: int) -> frozenset[int]:
    return frozenset(ordinals)


@dataclasses.dataclass
class World:
    """The cluster as the operator would observe it; `step` plays one cycle's effects."""

    config: Config
    sts: int
    pods: set[int]
    claims: set[int]
    changes: dict[int, Change] = dataclasses.field(default_factory=dict)
    previous: dict[str, Any] = dataclasses.field(default_factory=dict)
    down: set[int] = dataclasses.field(default_factory=set)
    reclaim_delete: bool = True
    asked: list[tuple[frozenset[int], int]] = dataclasses.field(default_factory=list)

    def observe(self, requested: int) -> Observed:
        voters = self.config.voters
        replicas = {k: Replica(alive=k not in self.down,
                               ready=k not in self.down and k in voters) for k in self.pods}
        return Observed(requested=requested, sts_replicas=self.sts, config=self.config,
                        changes=dict(self.changes), replicas=replicas,
                        claims=frozenset(self.claims), reclaim_delete=self.reclaim_delete,
                        previous=copy.deepcopy(self.previous),
                        recorded_members=scaling._ids(self.previous.get("members")), now=NOW)

    def apply(self, plan: scaling.Plan) -> None:
        """The operator's effects, then one tick of the replicas and the controller."""
        self.previous = dict(plan.status)
        voters = self.config.voters
        assert plan.sts_replicas >= max(voters) + 1, "a voter's pod would be removed"
        self.sts = plan.sts_replicas
        act = plan.action
        if isinstance(act, ChangeMembership):
            assert act.via in self.config.members & act.target, "ask a member that stays"
            assert act.via not in self.down
            self.asked.append((act.target, act.via))
            running = [c for c in self.changes.values() if c.running]
            assert all(c.target == act.target for c in running), "one change at a time"
            self.changes[act.via] = Change(act.target, "starting")
        elif isinstance(act, DeleteClaims):
            assert not set(act.ordinals) & (self.pods | self.config.voters)
            self.claims -= set(act.ordinals)
        self.tick()

    def tick(self) -> None:
        # the StatefulSet controller: pods (and their claims) follow spec.replicas
        self.pods = set(range(self.sts))
        self.claims |= self.pods
        # the replicas: each running change advances one state per tick
        for k, c in list(self.changes.items()):
            if not c.running:
                continue
            cfg = self.config
            if c.state == "starting":
                new_voters = cfg.members | c.target
                assert new_voters <= self.pods, "a joint configuration needs the new pods"
                self.config = Config(cfg.epoch + 1, cfg.members, c.target)
                self.changes[k] = dataclasses.replace(c, state="rescanning", total=10,
                                                      epoch=cfg.epoch + 1)
            elif c.state == "rescanning":
                self.changes[k] = dataclasses.replace(c, state="installing-new", rescanned=10)
            elif c.state == "installing-new":
                self.config = Config(cfg.epoch + 1, c.target, None)
                self.changes[k] = dataclasses.replace(c, state="done", epoch=cfg.epoch + 1)


def world(n: int) -> World:
    m = frozenset(range(n))
    return World(config=Config(1, m), sts=n, pods=set(m), claims=set(m),
                 previous=dict(scaling.Plan.steady(n).status))


def run(w: World, requested: int, limit: int = 30) -> list[scaling.Plan]:
    plans = []
    for _ in range(limit):
        plan = resolve(w.observe(requested))
        plans.append(plan)
        if plan.phase == IDLE and plan.members == frozenset(range(requested)) \
                and w.sts == requested and not plan.action:
            return plans
        w.apply(plan)
    raise AssertionError(f"not done in {limit} cycles: {[p.summary() for p in plans[-5:]]}")


def phases(plans: list[scaling.Plan]) -> list[str]:
    out: list[str] = []
    for p in plans:
        if not out or out[-1] != p.phase:
            out.append(p.phase)
    return out


def reasons(plans: list[scaling.Plan]) -> list[str]:
    return [e[1] for p in plans for e in p.events]


def test_scale_up_3_to_5_grows_first_then_changes_membership() -> None:
    w = world(3)
    plans = run(w, 5)
    assert phases(plans) == [ADDING, CHANGING, IDLE]
    first = plans[0]
    assert first.sts_replicas == 5 and first.action is None and first.members == r(0, 1, 2)
    assert w.asked == [(r(0, 1, 2, 3, 4), 0)]
    assert w.config == Config(3, r(0, 1, 2, 3, 4))
    assert plans[-1].status["members"] == ["0", "1", "2", "3", "4"]
    assert plans[-1].status["last"]["from"] == ["0", "1", "2"]
    assert plans[-1].status["last"]["to"] == ["0", "1", "2", "3", "4"]
    assert reasons(plans) == ["ScalingUp", "AddingReplicas", "MembershipChangeStarted",
                              "MembershipChanged", "ScalingDone"]
    # status.replicas (members) reaches 5 only once the new configuration is installed
    assert [len(p.members) for p in plans] == [3] * (len(plans) - 1) + [5]


def test_scale_down_5_to_3_changes_membership_first_then_shrinks_and_releases() -> None:
    w = world(5)
    plans = run(w, 3)
    assert phases(plans) == [CHANGING, REMOVING, RELEASING, IDLE]
    assert plans[0].sts_replicas == 5 and isinstance(plans[0].action, ChangeMembership)
    assert w.claims == {0, 1, 2}
    assert reasons(plans) == ["ScalingDown", "MembershipChangeStarted", "MembershipChanged",
                              "RemovingReplicas", "VolumesReleased", "ScalingDone"]


def test_scale_down_with_retain_keeps_claims() -> None:
    w = world(5)
    w.reclaim_delete = False
    plans = run(w, 3)
    assert RELEASING not in phases(plans)
    assert w.claims == {0, 1, 2, 3, 4}
    assert "VolumesRetained" in reasons(plans)


def test_scale_to_one_and_back() -> None:
    w = world(3)
    run(w, 1)
    assert w.config.members == r(0) and w.sts == 1
    run(w, 3)
    assert w.config.members == r(0, 1, 2)


def intermediate_worlds(n: int, requested: int) -> list[World]:
    """Every state a run from n to `requested` passes through."""
    w = world(n)
    states = [copy.deepcopy(w)]
    for _ in range(30):
        plan = resolve(w.observe(requested))
        if plan.phase == IDLE and w.sts == requested and not plan.action \
                and plan.members == frozenset(range(requested)):
            break
        w.apply(plan)
        states.append(copy.deepcopy(w))
    return states


@pytest.mark.parametrize(("n", "requested"), [(3, 5), (5, 3), (3, 1), (1, 3), (5, 1)])
@pytest.mark.parametrize("status_lost", [False, True])
def test_resumes_from_every_intermediate_state(n: int, requested: int,
                                               status_lost: bool) -> None:
    """The operator killed after any cycle: a new one (with the recorded status, or even
    with none) finishes the job."""
    for state in intermediate_worlds(n, requested):
        w = copy.deepcopy(state)
        if status_lost:
            w.previous = {}
        run(w, requested)
        assert w.config.members == frozenset(range(requested)) and w.config.joining is None
        assert w.sts == requested


@pytest.mark.parametrize(("n", "requested"), [(3, 5), (5, 3)])
def test_driver_killed_mid_change_is_resumed_through_another_member(n: int,
                                                                    requested: int) -> None:
    for state in intermediate_worlds(n, requested):
        if state.config.joining is None:
            continue
        w = copy.deepcopy(state)
        w.changes.clear()  # the driving replica restarted: it forgot its progress
        w.down = {0}  # and is not back yet
        plan = resolve(w.observe(requested))
        assert isinstance(plan.action, ChangeMembership)
        assert plan.action.target == w.config.joining and plan.action.via == 1
        w.apply(plan)
        w.down = set()
        run(w, requested)
        assert w.config.members == frozenset(range(requested))


def test_failed_change_is_asked_again_with_a_warning() -> None:
    w = world(3)
    w.sts, w.pods = 5, {0, 1, 2, 3, 4}
    target = r(0, 1, 2, 3, 4)
    w.config = Config(2, r(0, 1, 2), target)
    w.changes = {0: Change(target, "failed", error="QuorumUnavailable: x")}
    w.previous = {**w.previous, "phase": CHANGING, "driver": "0"}
    plan = resolve(w.observe(5))
    assert plan.action == ChangeMembership(target, 0)
    assert ("Warning", "MembershipChangeRetried") in [(e[0], e[1]) for e in plan.events]
    w.apply(plan)
    again = resolve(w.observe(5))
    assert "MembershipChangeRetried" not in [e[1] for e in again.events]


def test_new_pods_must_answer_before_the_change() -> None:
    w = world(3)
    w.sts, w.pods = 5, {0, 1, 2, 3, 4}
    w.down = {4}
    plan = resolve(w.observe(5))
    assert plan.phase == ADDING and plan.action is None
    assert "demo-4" in plan.status["message"]


def test_no_change_without_a_majority_of_old_and_new() -> None:
    w = world(5)
    w.down = {0, 1, 2}  # 2 of 5 ready: the joint configuration could not be installed
    plan = resolve(w.observe(3))
    assert plan.action is None and plan.blocked_reason == "QuorumAtRisk"
    assert "2 of 5" in plan.blocked
    w.down = {3, 4}  # 3 of 5 ready, 3 of 3 new: safe, even with two members down
    plan = resolve(w.observe(3))
    assert plan.action == ChangeMembership(r(0, 1, 2), 0) and not plan.blocked


def test_driver_is_a_ready_member_that_stays() -> None:
    w = world(5)
    w.down = {0}
    plan = resolve(w.observe(3))
    assert plan.action == ChangeMembership(r(0, 1, 2), 1)


def test_a_new_request_waits_for_the_change_in_progress() -> None:
    """3→5 is joint when the user asks for 3 again: finish 5 first, then go back to 3."""
    w = world(3)
    for _ in range(3):
        w.apply(resolve(w.observe(5)))
    assert w.config.joining == r(0, 1, 2, 3, 4)
    plan = resolve(w.observe(3))
    assert plan.phase == CHANGING and plan.sts_replicas == 5
    assert plan.status["to"] == ["0", "1", "2", "3", "4"]
    run(w, 3)
    assert w.asked == [(r(0, 1, 2, 3, 4), 0), (r(0, 1, 2), 0)]
    assert w.config.members == r(0, 1, 2) and w.sts == 3


def test_a_started_but_not_yet_joint_change_is_finished_first() -> None:
    w = world(3)
    w.sts, w.pods = 5, {0, 1, 2, 3, 4}
    w.changes = {0: Change(r(0, 1, 2, 3, 4), "starting")}
    plan = resolve(w.observe(3))
    assert plan.phase == CHANGING and plan.action is None and plan.sts_replicas == 5


def test_cancelled_scale_up_before_the_change_removes_the_new_pods() -> None:
    w = world(3)
    w.apply(resolve(w.observe(5)))  # StatefulSet to 5, the pods come
    plans = run(w, 3)
    assert w.asked == [] and w.sts == 3
    assert phases(plans)[0] == REMOVING


def test_unknown_membership_never_changes_anything() -> None:
    obs = Observed(requested=5, sts_replicas=3, config=None, changes={},
                   replicas={k: Replica() for k in range(3)}, recorded_members=r(0, 1, 2),
                   previous=dict(scaling.Plan.steady(3).status), now=NOW)
    plan = resolve(obs)
    assert plan.action is None and plan.sts_replicas == 3 and plan.members == r(0, 1, 2)
    assert plan.blocked_reason == "MembershipUnknown"


def test_creation_uses_the_requested_count() -> None:
    obs = Observed(requested=3, sts_replicas=None, config=None, changes={}, replicas={})
    plan = resolve(obs)
    assert plan.members == r(0, 1, 2) and plan.sts_replicas == 3 and plan.phase == IDLE
    assert not plan.blocked


def test_steady_unknown_membership_undoes_statefulset_drift() -> None:
    """`kubectl scale sts` by hand while replicas cannot be reached: back to the members."""
    obs = Observed(requested=1, sts_replicas=2, config=None, changes={},
                   replicas={0: Replica(), 1: Replica()}, recorded_members=r(0),
                   previous=dict(scaling.Plan.steady(1).status), now=NOW)
    assert resolve(obs).sts_replicas == 1


def test_steady_known_membership_undoes_statefulset_drift() -> None:
    w = world(3)
    w.sts, w.pods = 5, {0, 1, 2, 3, 4}
    plan = resolve(w.observe(3))
    assert plan.sts_replicas == 3 and plan.phase == REMOVING


def test_an_older_configuration_than_recorded_is_not_trusted() -> None:
    w = world(3)
    w.previous["epoch"] = 5
    plan = resolve(w.observe(5))
    assert plan.action is None and plan.sts_replicas == 3
    assert plan.blocked_reason == "MembershipUnknown"


def test_wants_cycles() -> None:
    steady = dict(scaling.Plan.steady(3).status)
    st: dict[str, Any] = {"observedGeneration": 1, "replicas": 3, "scaling": steady}
    assert not scaling.wants_cycles(kvcluster(spec={"replicas": 3}, status=st))
    assert scaling.wants_cycles(kvcluster(spec={"replicas": 5}, status=st))
    busy = {**st, "scaling": {**steady, "phase": REMOVING}}
    assert scaling.wants_cycles(kvcluster(spec={"replicas": 3}, status=busy))
    assert not scaling.wants_cycles(kvcluster(spec={"replicas": 5}))


def test_change_report_parsing() -> None:
    c = Change.from_json({"target": {"0": "u", "1": "u"}, "members": ["0", "1"],
                          "state": "rescanning", "rescanned": 5, "total": 9, "epoch": 4,
                          "error": ""})
    assert c == Change(r(0, 1), "rescanning", 4, 5, 9, "") and c.running
    assert Config.from_json({"epoch": 0, "members": ["0"]}) is None
    assert Config.from_json({"epoch": 3, "members": ["0", "1"], "joining": ["0"]}) == \
        Config(3, r(0, 1), r(0))


def test_bootstrap_members_stay_fixed() -> None:
    """QUORUMKV_PEERS is rendered from the first configuration, never from spec.replicas."""
    spec = ClusterSpec.from_body(kvcluster(spec={"replicas": 5}), "img")
    sts = builders.statefulset(spec, replicas=5, bootstrap=3, cluster_domain="cluster.local")
    assert sts_members(sts) == 3
    assert bootstrap_members(kvcluster(spec={"replicas": 5}), sts, 5) == 3
    assert bootstrap_members(kvcluster(spec={"replicas": 5},
                                       status={"bootstrapMembers": 3}), None, 5) == 3
    assert bootstrap_members(kvcluster(spec={"replicas": 5}), None, 5) == 5
    assert sts["metadata"]["annotations"][builders.BOOTSTRAP_ANNOTATION] == "3"
    assert _claim_size(sts) == "1Gi" and _claim_size(None) is None


def test_asking_again_after_a_refusal_posts_no_new_event() -> None:
    w = world(5)
    plan = resolve(w.observe(3))
    assert "MembershipChangeStarted" in reasons([plan])
    w.previous = dict(plan.status)  # the replica refused (409): no change is running
    again = resolve(w.observe(3))
    assert again.action == plan.action
    assert reasons([again]) == []


def test_new_pods_that_do_not_start_are_reported_after_a_while() -> None:
    w = world(3)
    w.sts, w.pods, w.down = 5, {0, 1, 2, 3, 4}, {3}
    w.previous = {**w.previous, "phase": ADDING, "startedAt": "2025-12-31T23:57:00Z"}
    plan = resolve(w.observe(5))
    assert plan.action is None and plan.blocked_reason == "ReplicasNotStarting"
    assert "demo-3" in plan.blocked and "180s" in plan.blocked
    w.previous["startedAt"] = "2025-12-31T23:59:30Z"
    assert not resolve(w.observe(5)).blocked
