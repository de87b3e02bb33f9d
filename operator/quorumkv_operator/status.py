"""Status (pure): an immutable snapshot of what was observed → the KVCluster's `status`.

`Available` means a quorum of members answers. "Answers" is the replica's own word
(`GET /v1/cluster` replied) when the operator can reach replicas at all; when it cannot
(e.g. it runs outside the cluster and pod DNS does not resolve), pod readiness stands in.
Condition `lastTransitionTime` changes only when the condition's status changes, so a
user can tell how long a cluster has been degraded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from quorumkv_operator.model import quorum
from quorumkv_operator.scaling import Plan

AVAILABLE = "Available"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
SCALING_BLOCKED = "ScalingBlocked"
CONDITION_TYPES = (AVAILABLE, PROGRESSING, DEGRADED, SCALING_BLOCKED)


@dataclasses.dataclass(frozen=True)
class Member:
    """One replica pod as seen now. `reply` is its `/v1/cluster` answer, None if it did
    not answer (or was not asked because the pod has no IP yet)."""

    ordinal: int
    name: str
    exists: bool = False
    pod_ready: bool = False
    pod_phase: str = ""
    reply: Mapping[str, Any] | None = None
    error: str = ""
    url: str = ""
    """How the operator reaches the replica (pod IP), empty without an IP."""


@dataclasses.dataclass(frozen=True)
class RolloutState:
    """The facts about the StatefulSet that decide `Progressing`."""

    exists: bool = False
    observed: bool = False  # status.observedGeneration >= metadata.generation
    updated_replicas: int = 0
    revisions_match: bool = False

    @classmethod
    def from_statefulset(cls, sts: Mapping[str, Any] | None) -> RolloutState:
        if not sts:
            return cls()
        meta, st = sts.get("metadata", {}), sts.get("status") or {}
        return cls(
            exists=True,
            observed=int(st.get("observedGeneration") or 0) >= int(meta.get("generation") or 0),
            updated_replicas=int(st.get("updatedReplicas") or 0),
            revisions_match=bool(st.get("updateRevision"))
            and st.get("currentRevision") == st.get("updateRevision"),
        )


@dataclasses.dataclass(frozen=True)
class Snapshot:
    name: str
    generation: int
    selector: str
    scaling: Plan
    """The scaling plan of this cycle (members, phase, whether a request waits)."""
    rollout: RolloutState
    members: Sequence[Member]
    previous: Mapping[str, Any]
    """The status currently stored (for lastTransitionTime and the Pending → * history)."""
    now: str
    """RFC 3339 UTC timestamp used for transitions that happen in this snapshot."""


def answering(members: Sequence[Member]) -> list[Member]:
    """Members that can take part in a quorum now. With working probes: those whose replica
    replied and says it is ready; otherwise (no replica reachable at all): ready pods."""
    probing_works = any(m.reply is not None for m in members)
    if probing_works:
        return [m for m in members if m.reply is not None and m.reply.get("ready", True)]
    return [m for m in members if m.pod_ready]


def _condition(status: bool, reason: str, message: str) -> dict[str, Any]:
    return {"status": "True" if status else "False", "reason": reason, "message": message}


def _with_times(
    ctype: str, cond: dict[str, Any], previous: Sequence[Mapping[str, Any]], now: str,
    generation: int,
) -> dict[str, Any]:
    old = next((c for c in previous if c.get("type") == ctype), None)
    keep = old is not None and old.get("status") == cond["status"]
    when = old.get("lastTransitionTime", now) if keep and old is not None else now
    return {"type": ctype, **cond, "lastTransitionTime": when, "observedGeneration": generation}


def compute(snap: Snapshot) -> dict[str, Any]:
    """The whole `status` object for the snapshot.

    Available needs a quorum answering AND one ready pod, so that the client Service has an
    endpoint when `kubectl wait --for=condition=Available` returns. A cluster stays in phase
    Pending (not Degraded) until every member has been ready once ("initialized")."""
    plan = snap.scaling
    membership = plan.members
    n = len(membership)
    q = quorum(n)
    in_set = [m for m in snap.members if m.ordinal in membership]
    ready = [m for m in in_set if m.pod_ready]
    up = answering(in_set)
    available = len(up) >= q and bool(ready)
    missing = [m.name for m in in_set if not m.pod_ready]
    initialized = snap.previous.get("phase") not in (None, "", "Pending") or (
        available and not missing)
    rollout = snap.rollout
    rolling = not (rollout.exists and rollout.observed and rollout.revisions_match
                   and rollout.updated_replicas >= plan.sts_replicas)
    # a rolling update restarts one pod at a time: that one is being updated, not missing
    degraded = initialized and len(missing) > (1 if rolling else 0)
    sc = plan.status
    scaling_up = len(sc.get("to") or []) >= len(sc.get("from") or [])
    progress = (f"{len(sc.get('from') or [])} → {len(sc.get('to') or [])} members: "
                f"{plan.phase}" + (f", {sc['rescanned']}/{sc['total']} keys rescanned"
                                   if sc.get("total") else "")
                + (f" ({sc['message']})" if sc.get("message") else ""))

    conds = {
        AVAILABLE: _condition(
            available,
            "QuorumReachable" if available else
            ("WaitingForQuorum" if not initialized else "QuorumLost"),
            f"{len(up)} of {n} members answer; a quorum is {q}",
        ),
        PROGRESSING: _condition(
            rolling or not initialized or plan.active,
            ("ScalingUp" if scaling_up else "ScalingDown") if plan.active else
            "Creating" if not initialized else ("RollingOut" if rolling else "UpToDate"),
            progress if plan.active else
            "StatefulSet rollout in progress" if rolling else
            ("waiting for every member to be ready once" if not initialized
             else "StatefulSet is up to date"),
        ),
        DEGRADED: _condition(
            degraded,
            "MembersNotReady" if degraded else
            ("Creating" if not initialized else
             "RollingOut" if missing else "AllMembersReady"),
            ("not ready: " + ", ".join(missing)) if missing else f"all {n} members ready",
        ),
        SCALING_BLOCKED: _condition(
            bool(plan.blocked),
            plan.blocked_reason or "Blocked" if plan.blocked else "AsRequested",
            plan.blocked or (f"scaling: {progress}" if plan.active
                             else f"running {n} members as requested"),
        ),
    }
    prev_conds: Sequence[Mapping[str, Any]] = snap.previous.get("conditions") or []
    conditions = [_with_times(t, conds[t], prev_conds, snap.now, snap.generation)
                  for t in CONDITION_TYPES]
    return {
        "replicas": n,
        "readyReplicas": len(ready),
        "quorum": q,
        "phase": _phase(available, initialized, bool(plan.blocked), plan.active, degraded,
                        rolling),
        "observedGeneration": snap.generation,
        "selector": snap.selector,
        "members": [_member_status(m, plan) for m in snap.members],
        "conditions": conditions,
        "scaling": dict(plan.status),
    }


def _phase(available: bool, initialized: bool, blocked: bool, scaling: bool,
           degraded: bool, rolling: bool) -> str:
    if not initialized:
        return "Pending"
    if not available:
        return "Unavailable"
    if blocked:
        return "ScalingBlocked"
    if scaling:
        return "Scaling"
    if degraded:
        return "Degraded"
    return "Updating" if rolling else "Running"


def _role(ordinal: int, plan: Plan) -> str:
    member = ordinal in plan.members
    joining = plan.joining is not None and ordinal in plan.joining
    if plan.joining is not None and member != joining:
        return "Leaving" if member else "Joining"
    return "Member" if member else "NonMember"


def _member_status(m: Member, plan: Plan) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": m.name,
        "nodeId": str(m.ordinal),
        "role": _role(m.ordinal, plan),
        "podReady": m.pod_ready,
        "podPhase": m.pod_phase or ("Missing" if not m.exists else "Unknown"),
        "answering": m.reply is not None,
    }
    if m.reply is not None:
        members = m.reply.get("members") or []
        out["epoch"] = int(m.reply.get("epoch") or 0)
        out["replicaReady"] = bool(m.reply.get("ready"))
        out["reachableMembers"] = sum(1 for p in members if p.get("reachable"))
        out["knownMembers"] = len(members)
    elif m.error:
        out["error"] = m.error[:200]
    return out


def strip_volatile(status: Mapping[str, Any]) -> dict[str, Any]:
    """Status without fields that change on every probe, to decide whether to write."""
    return {k: v for k, v in status.items() if k != "lastProbeTime"}


def transition_events(
    old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]],
) -> list[tuple[str, str, str]]:
    """Kubernetes Events `(type, reason, message)` for conditions that changed status."""
    before = {c.get("type"): c.get("status") for c in old}
    out: list[tuple[str, str, str]] = []
    for c in new:
        ctype, now_true = c["type"], c["status"] == "True"
        if before.get(ctype) == c["status"]:
            continue
        if ctype == AVAILABLE and (now_true or ctype in before):
            out.append(("Normal" if now_true else "Warning",
                        "QuorumAvailable" if now_true else "QuorumLost", c["message"]))
        elif ctype == DEGRADED and (now_true or ctype in before) and c["reason"] != "Creating":
            out.append(("Warning" if now_true else "Normal",
                        "MembersNotReady" if now_true else "AllMembersReady", c["message"]))
        elif ctype == SCALING_BLOCKED and now_true:
            out.append(("Warning", c.get("reason") or "ScalingBlocked", c["message"]))
        elif ctype == SCALING_BLOCKED and ctype in before:
            out.append(("Normal", "ScalingUnblocked", c["message"]))
    return out
