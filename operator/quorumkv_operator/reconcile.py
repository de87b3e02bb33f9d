"""One reconcile cycle and one status refresh: observe → decide (pure) → act → report.

Kept apart from the kopf decorators so the same cycle serves create, update, resume, the
drift timer and pod events, and so it reads top to bottom as the loop it is.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import secrets
from collections.abc import Mapping
from typing import Any

from quorumkv_operator import builders, scaling, status
from quorumkv_operator.apply import Kube, NotOwned
from quorumkv_operator.model import RECLAIM_DELETE, ClusterSpec
from quorumkv_operator.probe import change_membership, memberships, observe_members
from quorumkv_operator.settings import Settings
from quorumkv_operator.status import Member

Event = tuple[str, str, str]  # (type, reason, message)


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sts_members(sts: Mapping[str, Any] | None) -> int | None:
    """The bootstrap member count an existing StatefulSet runs with: the entries of its
    QUORUMKV_PEERS (what its replicas were started with; fixed for the cluster's life)."""
    if sts is None:
        return None
    pod = ((sts.get("spec") or {}).get("template") or {}).get("spec") or {}
    for container in pod.get("containers") or []:
        for env in container.get("env") or []:
            if env.get("name") == "QUORUMKV_PEERS" and env.get("value"):
                return len([p for p in str(env["value"]).split(",") if p.strip()])
    return int((sts.get("spec") or {}).get("replicas") or 0) or None


def bootstrap_members(body: Mapping[str, Any], sts: Mapping[str, Any] | None,
                      requested: int) -> int:
    """The first configuration's size, rendered into QUORUMKV_PEERS forever: from the
    StatefulSet (its env, or our annotation on it), else `status.bootstrapMembers` (the
    StatefulSet was deleted), else `spec.replicas` (a new cluster)."""
    from_sts = sts_members(sts)
    if from_sts:
        return from_sts
    recorded = (body.get("status") or {}).get("bootstrapMembers")
    return int(recorded) if recorded else max(1, requested)


def _claim_size(sts: Mapping[str, Any] | None) -> str | None:
    if sts is None:
        return None
    for tpl in (sts.get("spec") or {}).get("volumeClaimTemplates") or []:
        if tpl.get("metadata", {}).get("name") == "data":
            size = tpl.get("spec", {}).get("resources", {}).get("requests", {}).get("storage")
            return str(size) if size else None
    return None


def sts_replicas(sts: Mapping[str, Any] | None) -> int | None:
    """The StatefulSet's `spec.replicas` (None: no StatefulSet)."""
    return int((sts.get("spec") or {}).get("replicas") or 0) if sts else None


async def probe_pods(kube: Kube, settings: Settings, spec: ClusterSpec,
                     members: frozenset[int]) -> list[Member]:
    """Every pod up to the highest known member (or `spec.replicas`), probed."""
    pods = await asyncio.to_thread(kube.pods, spec.namespace, builders.selector_string(spec.name))
    listed = max(members) + 1 if members else spec.replicas
    return await observe_members(spec.name, pods, listed, timeout=settings.probe_timeout)


def newest_config(views: Mapping[int, Mapping[str, Any]]) -> scaling.Config | None:
    configs = [c for c in (scaling.Config.from_json(v.get("config")) for v in views.values())
               if c is not None]
    return max(configs, key=lambda c: c.epoch) if configs else None


async def observe(
    kube: Kube, settings: Settings, spec: ClusterSpec, body: Mapping[str, Any],
    sts: Mapping[str, Any] | None,
) -> tuple[list[Member], scaling.Observed, str | None]:
    """Everything the scaling resolver and the status need, read in one go."""
    previous = body.get("status") or {}
    recorded = scaling.recorded_members(previous)
    members = await probe_pods(kube, settings, spec, recorded)
    token = await asyncio.to_thread(kube.secret_value, builders.token_secret_name(spec.name),
                                    spec.namespace, builders.TOKEN_KEY)
    views = await memberships(members, token, timeout=settings.probe_timeout)
    prefix = f"data-{spec.name}-"
    claims = await asyncio.to_thread(kube.claims, spec.namespace, prefix)
    changes = {o: c for o, c in ((o, scaling.Change.from_json(v.get("change")))
                                 for o, v in views.items()) if c is not None}
    obs = scaling.Observed(
        requested=spec.replicas,
        sts_replicas=sts_replicas(sts),
        config=newest_config(views), changes=changes,
        replicas={m.ordinal: scaling.Replica(alive=m.reply is not None,
                                             ready=bool(m.reply and m.reply.get("ready")))
                  for m in members if m.exists},
        claims=frozenset(int(c.removeprefix(prefix)) for c in claims
                         if c.removeprefix(prefix).isdigit()),
        reclaim_delete=spec.reclaim_policy == RECLAIM_DELETE,
        previous=previous.get("scaling") or {}, recorded_members=recorded, now=now_iso(),
        name=spec.name)
    return members, obs, token


def compute_status(
    body: Mapping[str, Any], spec: ClusterSpec, sts: Mapping[str, Any] | None,
    members: list[Member], plan: scaling.Plan, generation: int, bootstrap: int,
) -> dict[str, Any]:
    snap = status.Snapshot(
        name=spec.name, generation=generation, selector=builders.selector_string(spec.name),
        scaling=plan, rollout=status.RolloutState.from_statefulset(sts),
        members=members, previous=body.get("status") or {}, now=now_iso(),
    )
    out = status.compute(snap)
    out["bootstrapMembers"] = bootstrap
    return out


async def act(
    kube: Kube, settings: Settings, spec: ClusterSpec, plan: scaling.Plan,
    members: list[Member], token: str | None, previous_message: str = "",
) -> tuple[scaling.Plan, list[Event]]:
    """Carry out the plan's one action (after the manifests were applied). A refusal is
    posted as an Event only when it differs from the one recorded last cycle."""
    action = plan.action
    events: list[Event] = []
    if isinstance(action, scaling.ChangeMembership):
        via = next((m for m in members if m.ordinal == action.via), None)
        target = {str(k): builders.peer_url(spec.name, spec.namespace, k, settings.cluster_domain)
                  for k in sorted(action.target)}
        error = "no peer token" if not token else "" if via else f"{spec.name}-{action.via} gone"
        if via is not None and token:
            _, error = await change_membership(via, token, target,
                                               timeout=max(settings.probe_timeout, 5.0))
        if error:
            if error != previous_message:
                events.append(("Warning", "MembershipChangeRefused", error))
            plan = dataclasses.replace(plan, status={**plan.status, "message": error})
    elif isinstance(action, scaling.DeleteClaims):
        for k in action.ordinals:
            await asyncio.to_thread(kube.delete_claim, spec.namespace, f"data-{spec.name}-{k}")
    return plan, events


async def reconcile(
    kube: Kube, settings: Settings, body: Mapping[str, Any],
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> tuple[dict[str, Any], list[Event]]:
    """Bring the owned objects to the spec and the membership one step closer to it;
    return the new status and the Events to post."""
    spec = ClusterSpec.from_body(body, settings.default_image)
    events: list[Event] = []
    sts = await asyncio.to_thread(kube.statefulset, spec.name, spec.namespace)
    claim_size = _claim_size(sts)
    bootstrap = bootstrap_members(body, sts, spec.replicas)

    token_name = builders.token_secret_name(spec.name)
    if sts is None:
        token = builders.token_secret(spec, secrets.token_urlsafe(32))
        if await asyncio.to_thread(kube.ensure_secret, token):
            events.append(("Normal", "SecretCreated", f"peer token Secret {token_name} created"))
    members, observed, peer_token = await observe(kube, settings, spec, body, sts)
    if sts is not None and peer_token is None:
        # a new token would split the replicas: those restarted with it could not talk to
        # the others, which keep the old one; the old one is still in every running pod
        events.append(("Warning", "PeerTokenMissing", (
            f"Secret {token_name} is gone; a new token would cut restarted replicas off "
            f"from the others, so none is made: recreate it with the one the replicas use, "
            f"`kubectl -n {spec.namespace} create secret generic {token_name} "
            f"--from-file={builders.TOKEN_KEY}=<(kubectl -n {spec.namespace} exec "
            f"{spec.name}-0 -- cat {builders.TOKEN_DIR}/{builders.TOKEN_KEY})`")))
    plan = scaling.resolve(observed)
    desired = [
        builders.peers_service(spec),
        builders.client_service(spec),
        builders.statefulset(spec, replicas=plan.sts_replicas, bootstrap=bootstrap,
                             cluster_domain=settings.cluster_domain, claim_size=claim_size,
                             volume_permissions_init=settings.volume_permissions_init),
        builders.pod_disruption_budget(spec, members=len(plan.members)),
    ]
    changed = []
    for manifest in desired:
        try:
            if await asyncio.to_thread(kube.apply, manifest):
                changed.append(f"{manifest['kind']}/{manifest['metadata']['name']}")
        except NotOwned as e:
            events.append(("Warning", "ResourceConflict",
                           f"{e}: left as it is; rename or delete it, or this KVCluster"))
    if changed:
        verb = "Created" if sts is None else "Updated"
        events.append(("Normal", verb, f"{verb.lower()} " + ", ".join(changed)))
    if sts is None and spec.replicas % 2 == 0:
        events.append(("Warning", "EvenReplicas",
                       f"{spec.replicas} replicas tolerate no more failures than "
                       f"{spec.replicas - 1}; an odd count is cheaper for the same safety"))
    events += plan.events
    previous_message = str(observed.previous.get("message") or "")
    plan, acted = await act(kube, settings, spec, plan, members, peer_token, previous_message)
    events += acted
    if claim_size and claim_size != spec.storage_size:
        claims = [f"data-{spec.name}-{i}" for i in sorted(plan.members)]
        errors = await asyncio.to_thread(kube.expand_claims, spec.namespace, claims,
                                         spec.storage_size)
        if errors:
            events.append(("Warning", "VolumeExpansionFailed", "; ".join(errors)[:900]))

    new_sts = await asyncio.to_thread(kube.statefulset, spec.name, spec.namespace)
    new_status = compute_status(body, spec, new_sts, members, plan, spec.generation, bootstrap)
    new_status["lastProbeTime"] = now_iso()
    events += status.transition_events(
        (body.get("status") or {}).get("conditions") or [], new_status["conditions"])
    logger.info("reconciled", extra={
        "kvcluster": f"{spec.namespace}/{spec.name}", "members": len(plan.members),
        "requested": spec.replicas, "changed": changed, "phase": new_status["phase"],
        "ready": new_status["readyReplicas"], "plan": plan.summary()})
    return new_status, events


async def refresh(
    kube: Kube, settings: Settings, namespace: str, name: str, attempts: int = 3,
) -> tuple[Mapping[str, Any], list[Event]] | None:
    """Recompute and write status only (after a pod or StatefulSet event). Keeps the
    stored `observedGeneration`: only a reconcile may claim to have acted on a spec. The
    write is conditional on the resourceVersion read, and retried on a conflict."""
    for _ in range(attempts):
        body = await asyncio.to_thread(kube.kvcluster, name, namespace)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        previous = body.get("status") or {}
        if not previous.get("observedGeneration"):
            return None  # not reconciled yet: the create handler writes the first status
        if scaling.wants_cycles(body):
            # the members recorded last cycle may be gone already (a scale-down's leavers
            # answer "not a member": QuorumLost for a cluster that serves); the drive
            # timer's full cycles, every 2 s, read the configuration afresh
            return None
        spec = ClusterSpec.from_body(body, settings.default_image)
        sts = await asyncio.to_thread(kube.statefulset, name, namespace)
        plan = scaling.Plan.recorded(
            previous, sts_replicas(sts))
        generation = int(previous["observedGeneration"])
        members = await probe_pods(kube, settings, spec, plan.members)
        new_status = compute_status(body, spec, sts, members, plan, generation,
                                    bootstrap_members(body, sts, spec.replicas))
        new_status["lastProbeTime"] = previous.get("lastProbeTime") or now_iso()
        if status.strip_volatile(new_status) == status.strip_volatile(previous):
            return body, []
        written = await asyncio.to_thread(kube.patch_status, name, namespace, new_status,
                                          body["metadata"].get("resourceVersion"))
        if written:
            return body, status.transition_events(previous.get("conditions") or [],
                                                  new_status["conditions"])
    return None
