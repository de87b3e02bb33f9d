"""Observe a cluster's members: pod facts from the API, and each replica's own view from
`GET /v1/cluster` through `quorumkv.client` (the operator's only way to talk to replicas).

Probes are concurrent with a short timeout, so one dead pod costs one timeout, not N. The
replica is asked by pod IP (not DNS), which also works when the operator runs outside the
cluster on a machine that can route to pods; when it cannot, the probe fails and
`status.answering` falls back to pod readiness.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from quorumkv.client import Client, QuorumKVError

from quorumkv_operator.builders import POD_INDEX_LABEL, PORT
from quorumkv_operator.status import Member


def _ordinal(pod: Mapping[str, Any], cluster: str) -> int | None:
    meta = pod.get("metadata", {})
    index = (meta.get("labels") or {}).get(POD_INDEX_LABEL)
    if index is not None and str(index).isdigit():
        return int(index)
    suffix = str(meta.get("name", "")).removeprefix(f"{cluster}-")
    return int(suffix) if suffix.isdigit() else None


def _is_ready(pod: Mapping[str, Any]) -> bool:
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return False
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


async def _ask(url: str, timeout: float) -> tuple[Mapping[str, Any] | None, str]:
    try:
        async with Client(url, timeout=timeout) as c:
            return await c.cluster(), ""
    except Exception as e:  # any failure means "does not answer"; keep why for the status
        return None, f"{type(e).__name__}: {e}"[:200]


async def observe_members(
    cluster: str, pods: Sequence[Mapping[str, Any]], members: int, *, timeout: float,
    probe: bool = True,
) -> list[Member]:
    """One `Member` per ordinal in `range(members)` plus any extra pods that exist."""
    by_ordinal: dict[int, Mapping[str, Any]] = {}
    for pod in pods:
        o = _ordinal(pod, cluster)
        if o is not None:
            by_ordinal[o] = pod
    ordinals = sorted(set(range(members)) | set(by_ordinal))

    async def one(o: int) -> Member:
        pod = by_ordinal.get(o)
        if pod is None:
            return Member(ordinal=o, name=f"{cluster}-{o}")
        st = pod.get("status") or {}
        ip = st.get("podIP")
        reply, error, url = (None, "no pod IP yet", "")
        terminating = bool(pod.get("metadata", {}).get("deletionTimestamp"))
        if ip:
            url = f"http://{f'[{ip}]' if ':' in ip else ip}:{PORT}"
        if probe and url and not terminating:
            reply, error = await _ask(url, timeout)
        return Member(ordinal=o, name=pod["metadata"]["name"], exists=True,
                      pod_ready=_is_ready(pod),
                      pod_phase="Terminating" if terminating else st.get("phase", ""),
                      reply=reply, error=error, url=url)

    return list(await asyncio.gather(*(one(o) for o in ordinals)))


async def memberships(members: Sequence[Member], token: str | None, *,
                      timeout: float) -> dict[int, Mapping[str, Any]]:
    """The admin view (`GET /internal/v1/membership`: configuration + change report) of
    every replica that answered the probe, by ordinal. Needs the peer token."""
    if not token:
        return {}

    async def one(m: Member) -> tuple[int, Mapping[str, Any] | None]:
        try:
            async with Client(m.url, timeout=timeout, token=token) as c:
                return m.ordinal, await c.membership()
        except Exception:  # a replica that does not answer now is asked next cycle
            return m.ordinal, None

    asked = [m for m in members if m.reply is not None and m.url]
    views = await asyncio.gather(*(one(m) for m in asked))
    return {o: v for o, v in views if v is not None}


async def change_membership(member: Member, token: str, target: Mapping[str, str], *,
                            timeout: float) -> tuple[Mapping[str, Any] | None, str]:
    """Ask `member` to change the member set to `target` (id → peer URL); (view, "") or
    (None, why it refused or failed). Idempotent: asking again resumes or confirms."""
    try:
        async with Client(member.url, timeout=timeout, token=token) as c:
            return await c.change_membership(dict(target)), ""
    except QuorumKVError as e:
        return None, f"{member.name} refused ({e.status}): {e.detail or e.error}"[:300]
    except Exception as e:
        return None, f"{member.name} did not answer: {type(e).__name__}: {e}"[:300]
