"""Scaling (pure): what the cluster looks like now → the next step of a membership change.

The membership is the replicas' own durable configuration (numbered epochs), not the
StatefulSet: the operator only *asks* a member to change it (the admin API), and reads it
back. So the resolver below never trusts a record of its own over what the replicas say; it
looks at the observed configuration, the change report of the replica driving it, the pods,
the StatefulSet's size and the claims, and answers one step. Asked again after any crash, it
answers the step that finishes the job (Patroni-style).

Going from members A = {0..K-1} to B = {0..N-1} (`spec.replicas` = N):

- scale up: AddingReplicas (StatefulSet to N; the new pods start as non-voters and must
  answer) → ChangingMembership (ask the lowest ready member that stays to change to B; it
  installs joint(A, B), rescans every key, installs B) → Idle.
- scale down: ChangingMembership first (the leaving replicas still run, so the joint quorums
  have them) → RemovingReplicas (StatefulSet to N, wait for the pods to go) →
  ReleasingVolumes (reclaimPolicy Delete: delete the PVCs of ordinals ≥ N) → Idle.

One change at a time: while a change to some set is in progress (joint configuration, or a
driver reporting it running), the resolver finishes that one first, then starts the next
toward the newest `spec.replicas` (the service refuses a different target meanwhile). A change
starts only when a majority of the current members is ready and a majority of the target set
is up (the joint configuration needs both); otherwise it waits, with a reason.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Mapping
from typing import Any

IDLE = "Idle"
ADDING = "AddingReplicas"
CHANGING = "ChangingMembership"
REMOVING = "RemovingReplicas"
RELEASING = "ReleasingVolumes"
PHASES = (IDLE, ADDING, CHANGING, REMOVING, RELEASING)
SLOW_START_SECONDS = 120.0
"""New pods not answering after this long: the scale-up says so (ScalingBlocked)."""
RUNNING_STATES = frozenset({"starting", "installing-joint", "rescanning", "installing-new"})

Event = tuple[str, str, str]  # (type, reason, message)


def _ids(raw: Iterable[Any] | None) -> frozenset[int]:
    return frozenset(int(x) for x in raw or () if str(x).isdigit())


def ids(members: Iterable[int]) -> list[str]:
    """A member set as the sorted list of node ids (strings) status and the service use."""
    return [str(m) for m in sorted(members)]


def majority(members: frozenset[int], up: Iterable[int]) -> bool:
    return len(members & set(up)) * 2 > len(members)


@dataclasses.dataclass(frozen=True)
class Config:
    """A replica's membership configuration (`epoch` ≥ 1; epoch 0 = not initialized)."""

    epoch: int
    members: frozenset[int]
    joining: frozenset[int] | None = None

    @property
    def voters(self) -> frozenset[int]:
        return self.members | (self.joining or frozenset())

    @classmethod
    def from_json(cls, raw: Mapping[str, Any] | None) -> Config | None:
        """From the admin view's `config`; None when absent or not initialized."""
        if not raw or int(raw.get("epoch") or 0) < 1 or not raw.get("members"):
            return None
        joining = raw.get("joining")
        return cls(int(raw["epoch"]), _ids(raw["members"]),
                   None if joining is None else _ids(joining))


@dataclasses.dataclass(frozen=True)
class Change:
    """A replica's report of the change it drives (or drove last)."""

    target: frozenset[int]
    state: str
    epoch: int = 0
    rescanned: int = 0
    total: int = 0
    error: str = ""

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES

    @classmethod
    def from_json(cls, raw: Mapping[str, Any] | None) -> Change | None:
        if not raw:
            return None
        target = raw.get("members") or list((raw.get("target") or {}).keys())
        return cls(_ids(target), str(raw.get("state") or ""), int(raw.get("epoch") or 0),
                   int(raw.get("rescanned") or 0), int(raw.get("total") or 0),
                   str(raw.get("error") or ""))


@dataclasses.dataclass(frozen=True)
class Replica:
    """One existing pod: `alive` = its replica answered (so /healthz works), `ready` = the
    replica says it serves (a member caught up with a quorum)."""

    alive: bool = False
    ready: bool = False


@dataclasses.dataclass(frozen=True)
class Observed:
    requested: int
    """`spec.replicas`."""
    sts_replicas: int | None
    """The StatefulSet's `spec.replicas` (None: no StatefulSet yet)."""
    config: Config | None
    """The newest configuration the replicas report (None: none answered, or not formed)."""
    changes: Mapping[int, Change]
    """Each answering replica's change report (admin API)."""
    replicas: Mapping[int, Replica]
    """The pods that exist, by ordinal."""
    claims: frozenset[int] = frozenset()
    """Ordinals k that have a PVC `data-<name>-k`."""
    reclaim_delete: bool = False
    previous: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """`status.scaling` as last recorded."""
    recorded_members: frozenset[int] = frozenset()
    """Members as last recorded in status (stands in while no replica answers)."""
    now: str = ""
    """RFC 3339 UTC."""
    name: str = "demo"


@dataclasses.dataclass(frozen=True)
class ChangeMembership:
    """Ask replica `via` (a member that stays) to change the member set to `target`."""

    target: frozenset[int]
    via: int


@dataclasses.dataclass(frozen=True)
class DeleteClaims:
    ordinals: tuple[int, ...]


Action = ChangeMembership | DeleteClaims


@dataclasses.dataclass(frozen=True)
class Plan:
    members: frozenset[int]
    """The members the cluster runs now (`status.replicas` = their number)."""
    sts_replicas: int
    """What the StatefulSet's `spec.replicas` must be after this cycle."""
    status: Mapping[str, Any]
    """`status.scaling`."""
    action: Action | None = None
    events: tuple[Event, ...] = ()
    blocked: str = ""
    """Non-empty: the request waits for this (condition ScalingBlocked)."""
    blocked_reason: str = ""
    joining: frozenset[int] | None = None

    @property
    def phase(self) -> str:
        return str(self.status.get("phase", IDLE))

    @property
    def active(self) -> bool:
        return self.phase != IDLE

    def summary(self) -> str:
        """The plan in one log line."""
        act = self.action
        what = (f"ask {act.via} to change members to {','.join(ids(act.target))}"
                if isinstance(act, ChangeMembership) else
                f"delete claims of {','.join(map(str, act.ordinals))}"
                if isinstance(act, DeleteClaims) else "no action")
        msg = self.blocked or str(self.status.get("message") or "")
        return (f"{self.phase}: members {','.join(ids(self.members))}, statefulset "
                f"{self.sts_replicas}, {what}" + (f" ({msg})" if msg else ""))

    @classmethod
    def recorded(cls, status: Mapping[str, Any], sts_replicas: int | None) -> Plan:
        """The plan as the last reconcile recorded it (for status-only refreshes, which
        decide nothing)."""
        sc = status.get("scaling") or {}
        members = recorded_members(status)
        blocked = next((c for c in status.get("conditions") or []
                        if c.get("type") == "ScalingBlocked" and c.get("status") == "True"),
                       None)
        return cls(members=members,
                   sts_replicas=sts_replicas if sts_replicas is not None else len(members),
                   status={**_status(IDLE, members, {}), **sc},
                   blocked=str(blocked.get("message") or "") if blocked else "",
                   blocked_reason=str(blocked.get("reason") or "") if blocked else "")

    @classmethod
    def steady(cls, members: int) -> Plan:
        """A cluster at rest with `members` members (tests, creation)."""
        m = frozenset(range(members))
        return cls(members=m, sts_replicas=members, status=_status(IDLE, m, {}))


def recorded_members(status: Mapping[str, Any]) -> frozenset[int]:
    """The members the last reconcile saw (`status.scaling.members`, else `status.replicas`
    of an older operator version); empty for a new cluster."""
    sc = status.get("scaling") or {}
    if sc.get("members"):
        return _ids(sc["members"])
    n = int(status.get("replicas") or 0)
    return frozenset(range(n))


def wants_cycles(body: Mapping[str, Any]) -> bool:
    """Whether a KVCluster needs frequent reconcile cycles: a scale in progress or asked
    for (spec.replicas differs from the members), or a request waiting."""
    st = body.get("status") or {}
    if not st.get("observedGeneration"):
        return False
    requested = int((body.get("spec") or {}).get("replicas") or 0)
    phase = (st.get("scaling") or {}).get("phase") or IDLE
    return phase != IDLE or (requested > 0 and requested != len(recorded_members(st)))


def _seconds_between(start: str, end: str) -> float | None:
    try:
        a = datetime.datetime.fromisoformat(start.replace("Z", "+00:00"))
        b = datetime.datetime.fromisoformat(end.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max((b - a).total_seconds(), 0.0)


def _status(phase: str, members: frozenset[int], prev: Mapping[str, Any], *,
            src: frozenset[int] | None = None, dst: frozenset[int] | None = None,
            epoch: int | None = None, change: Change | None = None, driver: int | None = None,
            message: str = "", now: str = "") -> dict[str, Any]:
    """`status.scaling`. Every key is always present (status is merge-patched, so a key left
    out would keep its old value)."""
    active = phase != IDLE
    was_active = prev.get("phase", IDLE) != IDLE
    started = str(prev.get("startedAt") or "") if was_active else ""
    if active and not started:
        started = now
    last = dict(prev.get("last") or {})
    if not active and was_active:
        seconds = _seconds_between(str(prev.get("startedAt") or ""), now)
        last = {"from": list(prev.get("from") or []), "to": list(prev.get("to") or []),
                "startedAt": str(prev.get("startedAt") or ""), "finishedAt": now,
                "seconds": round(seconds) if seconds is not None else 0}
    prev_from = list(prev.get("from") or []) if was_active else []
    return {
        "phase": phase,
        "members": ids(members),
        "from": (prev_from or ids(src if src is not None else members)) if active else [],
        "to": ids(dst) if active and dst is not None else [],
        "epoch": int(epoch if epoch is not None else (prev.get("epoch") or 0)),
        "rescanned": change.rescanned if change and active else 0,
        "total": change.total if change and active else 0,
        "driver": str(driver) if driver is not None and active else "",
        "startedAt": started,
        "message": message,
        "last": last or {"from": [], "to": [], "startedAt": "", "finishedAt": "",
                         "seconds": 0},
    }


def _pods(name: str, ordinals: Iterable[int]) -> str:
    return ", ".join(f"{name}-{k}" for k in sorted(ordinals))


def resolve(o: Observed) -> Plan:
    """The next step. Pure; see the module docstring for the procedure."""
    prev = o.previous
    prev_phase = str(prev.get("phase") or IDLE)
    n = max(1, o.requested)
    target = frozenset(range(n))
    cfg = o.config
    stale = cfg is not None and cfg.epoch < int(prev.get("epoch") or 0)
    if cfg is None or stale:
        return _unknown(o, target, stale)

    members, joining = cfg.members, cfg.joining
    voters = cfg.voters
    driver_prev = int(prev["driver"]) if str(prev.get("driver") or "").isdigit() else None
    driver, change = _current_change(o.changes, driver_prev)
    if joining is not None:
        goal = joining  # a change is half done: finish it first
    elif change is not None and change.running and change.target != members:
        goal = change.target  # asked, not yet joint: finish it first
    else:
        goal = target

    events: list[Event] = []
    if goal == members and joining is None:
        return _settle(o, cfg, n, events)

    # a change from `members` to `goal` is needed or in progress
    src = members
    up = "up" if len(goal) > len(members) else "down"
    if prev_phase == IDLE:
        events.append(("Normal", "ScalingUp" if up == "up" else "ScalingDown",
                       f"scaling from {len(members)} to {len(goal)} members "
                       f"({','.join(ids(members))} → {','.join(ids(goal))})"))
        if len(goal) % 2 == 0:
            events.append(("Warning", "EvenReplicas",
                           f"{len(goal)} members tolerate no more failures than "
                           f"{len(goal) - 1}; an odd count is cheaper for the same safety"))
    sts = max(voters | goal) + 1

    def plan(phase: str, message: str, action: Action | None = None, *, blocked: str = "",
             reason: str = "", driver: int | None = None, ch: Change | None = None) -> Plan:
        return Plan(members=members, joining=joining, sts_replicas=sts, action=action,
                    events=tuple(events), blocked=blocked, blocked_reason=reason,
                    status=_status(phase, members, prev, src=src, dst=goal, epoch=cfg.epoch,
                                   change=ch, driver=driver, message=blocked or message,
                                   now=o.now))

    in_progress = change is not None and change.running and change.target == goal
    if in_progress:  # the driver is on it: report its progress
        return plan(CHANGING, _progress(change), driver=driver, ch=change)  # type: ignore[arg-type]
    started = joining is not None
    if not started:
        new = goal - voters
        if (o.sts_replicas or 0) < sts:
            if prev_phase != ADDING:
                events.append(("Normal", "AddingReplicas",
                               f"StatefulSet scaled to {sts}; {_pods(o.name, new)} start as "
                               "non-voting replicas"))
            return plan(ADDING, f"starting {_pods(o.name, new)}")
        missing = [k for k in sorted(new) if not o.replicas.get(k, Replica()).alive]
        if missing:
            waiting = f"waiting for {_pods(o.name, missing)} to start (answer /healthz as " \
                      "non-voting replicas)"
            since = _seconds_between(str(prev.get("startedAt") or ""), o.now)
            if since is not None and since > SLOW_START_SECONDS:
                return plan(ADDING, "", blocked=f"{waiting} for {since:.0f}s; check their pod "
                                                "events (scheduling, image, volumes)",
                            reason="ReplicasNotStarting")
            return plan(ADDING, waiting)
        ready_old = {k for k in members if o.replicas.get(k, Replica()).ready}
        up_new = ready_old | {k for k in new if o.replicas.get(k, Replica()).alive}
        if not majority(members, ready_old) or not majority(goal, up_new):
            return plan(ADDING if new else CHANGING, "", blocked=(
                f"a change {len(members)} → {len(goal)} needs a majority of the current "
                f"members ready ({len(members & ready_old)} of {len(members)} are) and of the "
                f"new set up ({len(goal & up_new)} of {len(goal)} are); waiting"),
                reason="QuorumAtRisk")
    staying = members & goal
    via = _pick_driver(staying, o.replicas, driver_prev)
    if via is None:
        return plan(CHANGING if started else (ADDING if goal - members else CHANGING), "",
                    blocked=f"no ready member of {','.join(ids(staying))} to drive the change "
                            f"to {','.join(ids(goal))}; waiting",
                    reason="NoDriver")
    failed = change is not None and change.target == goal and change.state == "failed"
    if failed:
        assert change is not None
        if change.error not in str(prev.get("message") or ""):
            events.append(("Warning", "MembershipChangeRetried",
                           f"the change to {','.join(ids(goal))} failed ({change.error}); "
                           f"asking {o.name}-{via} again"))
        message = f"failed ({change.error}); asking {o.name}-{via} again"
    elif started:
        message = f"resuming the change through {o.name}-{via}"
        if prev_phase != CHANGING:
            events.append(("Normal", "MembershipChangeResumed",
                           f"the change to {','.join(ids(goal))} is half done (joint "
                           f"configuration at epoch {cfg.epoch}); asked {o.name}-{via} to "
                           "finish it"))
    else:
        message = f"asked {o.name}-{via}"
        if prev_phase != CHANGING or driver_prev != via or list(prev.get("to") or []) != ids(goal):
            events.append(("Normal", "MembershipChangeStarted",
                           f"asked {o.name}-{via} to change the members to "
                           f"{','.join(ids(goal))} (joint configuration, rescan, new set)"))
    return plan(CHANGING, message, ChangeMembership(goal, via), driver=via, ch=change)


def _progress(change: Change) -> str:
    if change.state == "rescanning" or change.total:
        return f"{change.state}: {change.rescanned}/{change.total} keys rescanned"
    return change.state


def _current_change(changes: Mapping[int, Change],
                    driver: int | None) -> tuple[int | None, Change | None]:
    """A running change (the recorded driver's first, else the lowest ordinal's); else the
    recorded driver's last report."""
    running = [k for k in sorted(changes) if changes[k].running]
    if driver in running:
        return driver, changes[driver]
    if running:
        return running[0], changes[running[0]]
    if driver is not None and driver in changes:
        return driver, changes[driver]
    return None, None


def _pick_driver(staying: frozenset[int], replicas: Mapping[int, Replica],
                 previous: int | None) -> int | None:
    """The replica to ask: the previous driver if it is still a ready staying member, else
    the lowest ready one."""
    ready = sorted(k for k in staying if replicas.get(k, Replica()).ready)
    if previous is not None and previous in ready:
        return previous
    return ready[0] if ready else None


def _settle(o: Observed, cfg: Config, n: int, events: list[Event]) -> Plan:
    """The members are what `spec.replicas` asks: shrink, release volumes, or rest."""
    prev = o.previous
    prev_phase = str(prev.get("phase") or IDLE)
    members = cfg.members
    if prev_phase == CHANGING:
        events.append(("Normal", "MembershipChanged",
                       f"epoch {cfg.epoch}: members {','.join(ids(members))}"))

    def plan(phase: str, message: str, action: Action | None = None) -> Plan:
        return Plan(members=members, sts_replicas=n, action=action, events=tuple(events),
                    status=_status(phase, members, prev, dst=members, epoch=cfg.epoch,
                                   message=message, now=o.now))

    extra = sorted(k for k in o.replicas if k >= n)
    if (o.sts_replicas or 0) > n or extra:
        if prev_phase != REMOVING:
            events.append(("Normal", "RemovingReplicas",
                           f"StatefulSet scaled to {n}; removing {_pods(o.name, extra)} "
                           "(not members)"))
        return plan(REMOVING, f"waiting for {_pods(o.name, extra)} to terminate" if extra
                    else f"StatefulSet scaled to {n}")
    left = tuple(sorted(k for k in o.claims if k >= n))
    if left and o.reclaim_delete:
        if prev_phase != RELEASING:
            events.append(("Normal", "VolumesReleased",
                           "deleting " + ", ".join(f"data-{o.name}-{k}" for k in left)
                           + " (reclaimPolicy Delete)"))
        return plan(RELEASING, "deleting claims", DeleteClaims(left))
    if prev_phase != IDLE:
        if left:
            events.append(("Normal", "VolumesRetained",
                           "kept " + ", ".join(f"data-{o.name}-{k}" for k in left)
                           + " (reclaimPolicy Retain); a replica added back later "
                             "starts empty and catches up"))
        seconds = _seconds_between(str(prev.get("startedAt") or ""), o.now)
        events.append(("Normal", "ScalingDone",
                       f"{len(prev.get('from') or [])} → {len(members)} members"
                       + (f" in {seconds:.0f}s" if seconds is not None else "")))
    return plan(IDLE, "")


def _unknown(o: Observed, target: frozenset[int], stale: bool) -> Plan:
    """No replica tells us the membership (creation, all down, or the operator cannot reach
    pods): never change membership blind. At creation the members are the bootstrap set."""
    prev = o.previous
    prev_phase = str(prev.get("phase") or IDLE)
    members = o.recorded_members or target
    if (o.sts_replicas is None and not o.recorded_members) or (
            prev_phase == IDLE and members == target):
        return Plan(members=members, sts_replicas=max(members) + 1,
                    status=_status(IDLE, members, prev, epoch=int(prev.get("epoch") or 0),
                                   now=o.now))
    why = ("the replicas report an older configuration than recorded" if stale else
           "no replica reports its membership configuration (starting, down, or "
           "unreachable from the operator)")
    message = f"scaling {len(members)} → {len(target)} waits: {why}"
    return Plan(members=members, sts_replicas=max(o.sts_replicas or 0, max(members) + 1),
                status=_status(prev_phase, members, prev, dst=_ids(prev.get("to")) or target,
                               message=message, now=o.now),
                blocked=message, blocked_reason="MembershipUnknown")
