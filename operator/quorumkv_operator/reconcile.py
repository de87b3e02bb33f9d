"""One reconcile cycle and one status refresh: observe → decide (pure) → act → report.

Kept apart from the kopf decorators so the same cycle serves create, update, resume, the
drift timer and pod events, and so it reads top to bottom as the loop it is.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import secrets
from collections.abc import Mapping
from typing import Any

from quorumkv_operator import builders, scaling, status
from quorumkv_operator.apply import Kube
from quorumkv_operator.model import ClusterSpec
from quorumkv_operator.probe import observe_members
from quorumkv_operator.settings import Settings

Event = tuple[str, str, str]  # (type, reason, message)


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sts_members(sts: Mapping[str, Any] | None) -> int | None:
    """The membership an existing StatefulSet runs: the entries of its QUORUMKV_PEERS (what
    the replicas were started with), not `spec.replicas`, which `kubectl scale sts` or an
    HPA may have changed behind our back (that is drift, undone by the next reconcile)."""
    if sts is None:
        return None
    pod = ((sts.get("spec") or {}).get("template") or {}).get("spec") or {}
    for container in pod.get("containers") or []:
        for env in container.get("env") or []:
            if env.get("name") == "QUORUMKV_PEERS" and env.get("value"):
                return len([p for p in str(env["value"]).split(",") if p.strip()])
    return int((sts.get("spec") or {}).get("replicas") or 0) or None


def _claim_size(sts: Mapping[str, Any] | None) -> str | None:
    if sts is None:
        return None
    for tpl in (sts.get("spec") or {}).get("volumeClaimTemplates") or []:
        if tpl.get("metadata", {}).get("name") == "data":
            size = tpl.get("spec", {}).get("resources", {}).get("requests", {}).get("storage")
            return str(size) if size else None
    return None


def decide_scaling(body: Mapping[str, Any], sts: Mapping[str, Any] | None,
                   requested: int) -> scaling.ScalingDecision:
    recorded = (body.get("status") or {}).get("replicas")
    return scaling.decide(requested=requested, current_members=sts_members(sts),
                          recorded_members=int(recorded) if recorded else None)


async def observe_status(
    kube: Kube, settings: Settings, body: Mapping[str, Any], sts: Mapping[str, Any] | None,
    decision: scaling.ScalingDecision, generation: int,
) -> dict[str, Any]:
    meta = body["metadata"]
    name, ns = meta["name"], meta["namespace"]
    pods = await asyncio.to_thread(kube.pods, ns, builders.selector_string(name))
    members = await observe_members(name, pods, decision.members,
                                    timeout=settings.probe_timeout)
    snap = status.Snapshot(
        name=name, generation=generation, selector=builders.selector_string(name),
        scaling=decision, rollout=status.RolloutState.from_statefulset(sts),
        members=members, previous=body.get("status") or {}, now=now_iso(),
    )
    return status.compute(snap)


async def reconcile(
    kube: Kube, settings: Settings, body: Mapping[str, Any],
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> tuple[dict[str, Any], list[Event]]:
    """Bring the owned objects to the spec; return the new status and Events to post."""
    spec = ClusterSpec.from_body(body, settings.default_image)
    events: list[Event] = []
    sts = await asyncio.to_thread(kube.statefulset, spec.name, spec.namespace)
    decision = decide_scaling(body, sts, spec.replicas)
    claim_size = _claim_size(sts)

    token = builders.token_secret(spec, secrets.token_urlsafe(32))
    if await asyncio.to_thread(kube.ensure_secret, token):
        events.append(("Normal", "SecretCreated",
                       f"peer token Secret {builders.token_secret_name(spec.name)} created"))
    desired = [
        builders.peers_service(spec),
        builders.client_service(spec),
        builders.statefulset(spec, members=decision.members,
                             cluster_domain=settings.cluster_domain, claim_size=claim_size,
                             volume_permissions_init=settings.volume_permissions_init),
        builders.pod_disruption_budget(spec, members=decision.members),
    ]
    changed = []
    for manifest in desired:
        if await asyncio.to_thread(kube.apply, manifest):
            changed.append(f"{manifest['kind']}/{manifest['metadata']['name']}")
    if changed:
        verb = "Created" if sts is None else "Updated"
        events.append(("Normal", verb, f"{verb.lower()} " + ", ".join(changed)))
    if sts is None and spec.replicas % 2 == 0:
        events.append(("Warning", "EvenReplicas",
                       f"{spec.replicas} replicas tolerate no more failures than "
                       f"{spec.replicas - 1}; an odd count is cheaper for the same safety"))
    if claim_size and claim_size != spec.storage_size:
        claims = [f"data-{spec.name}-{i}" for i in range(decision.members)]
        errors = await asyncio.to_thread(kube.expand_claims, spec.namespace, claims,
                                         spec.storage_size)
        if errors:
            events.append(("Warning", "VolumeExpansionFailed", "; ".join(errors)[:900]))

    new_sts = await asyncio.to_thread(kube.statefulset, spec.name, spec.namespace)
    new_status = await observe_status(kube, settings, body, new_sts, decision, spec.generation)
    new_status["lastProbeTime"] = now_iso()
    events += status.transition_events(
        (body.get("status") or {}).get("conditions") or [], new_status["conditions"])
    logger.info("reconciled", extra={
        "kvcluster": f"{spec.namespace}/{spec.name}", "members": decision.members,
        "requested": spec.replicas, "changed": changed, "phase": new_status["phase"],
        "ready": new_status["readyReplicas"]})
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
        spec = ClusterSpec.from_body(body, settings.default_image)
        sts = await asyncio.to_thread(kube.statefulset, name, namespace)
        decision = decide_scaling(body, sts, spec.replicas)
        generation = int(previous["observedGeneration"])
        new_status = await observe_status(kube, settings, body, sts, decision, generation)
        new_status["lastProbeTime"] = previous.get("lastProbeTime") or now_iso()
        if status.strip_volatile(new_status) == status.strip_volatile(previous):
            return body, []
        written = await asyncio.to_thread(kube.patch_status, name, namespace, new_status,
                                          body["metadata"].get("resourceVersion"))
        if written:
            return body, status.transition_events(previous.get("conditions") or [],
                                                  new_status["conditions"])
    return None
