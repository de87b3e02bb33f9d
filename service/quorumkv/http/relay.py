"""Key requests that reach a replica outside the membership are passed on to a member.

Why: a replica removed by a scale-down runs on until its pod is deleted, and clients keep
the connections they opened to it (a Service balances connections, not requests); a replica
waiting to be added is reached by clients that name it. Answering them `503 not a member`
failed requests while a quorum was fine (measured on Kubernetes: a failed write in 3 of 4
scale-downs). Such a replica knows the members from its configuration, so it passes the
request on to one, the home first (`quorumkv.placement`), and hands back the answer.

A request is relayed once at most (`RELAYED_HEADER`): two replicas whose views of the
membership differ for a moment can never bounce one between them.
"""

from __future__ import annotations

from typing import NamedTuple

import aiohttp
import orjson

from quorumkv.client import key_url
from quorumkv.core.changes import Delete, Put, Single
from quorumkv.errors import (
    BadRequest,
    NotFound,
    PreconditionFailed,
    QuorumUnavailable,
    ServiceError,
    ValueTooLarge,
)
from quorumkv.node import Node
from quorumkv.placement import home_order

RELAYED_HEADER = "X-QuorumKV-Relayed"
_ERRORS: dict[int, type[ServiceError]] = {400: BadRequest, 404: NotFound,
                                          412: PreconditionFailed, 413: ValueTooLarge}


class Relayed(NamedTuple):
    """A member's successful answer, as it came."""

    status: int
    etag: str | None
    body: bytes
    content_type: str | None


def needed(node: Node) -> bool:
    """Whether key requests here go to a member: this replica knows the cluster but is not
    one of its voters. A replica that lost its data is not a relay: it must be re-added,
    and its `503` (and `/readyz`) say so."""
    membership = node.membership
    return membership.config.initialized and not membership.is_voter \
        and not membership.stale


async def send(node: Node, key: str, change: Single | None) -> Relayed:
    """Pass a read (`change` None) or a change of `key` on to a member; raises the member's
    error as ours. A member that cannot be connected to is skipped for the next one, as
    the request certainly did not reach it."""
    method, headers, body = _request(change)
    headers[RELAYED_HEADER] = node.settings.node_id
    config = node.membership.config
    urls = config.url_map()
    timeout = aiohttp.ClientTimeout(total=node.settings.request_timeout + 1)
    for member in _by_liveness(node, home_order(config.voters)):
        try:
            async with node.session.request(method, key_url(urls[member], key),
                                            headers=headers, data=body,
                                            timeout=timeout) as resp:
                answer = await resp.read()
                return _answer(member, resp, answer)
        except aiohttp.ClientConnectorError:
            continue  # never connected: try the next member
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise QuorumUnavailable(
                f"this replica is not a member; member {member} did not answer the request "
                f"passed on to it ({type(exc).__name__})"
                + ("; it may still take effect" if change is not None else ""),
                indeterminate=change is not None) from None
    raise QuorumUnavailable("this replica is not a member, and no member could be reached")


def _by_liveness(node: Node, members: list[str]) -> list[str]:
    """Members the heartbeats find answering first: a paused one would hold the request
    until its timeout (the order is otherwise kept: the home first)."""
    return sorted(members, key=lambda member: not (
        (link := node.links.get(member)) is not None and link.reachable))


def _request(change: Single | None) -> tuple[str, dict[str, str], bytes | None]:
    if change is None:
        return "GET", {}, None
    if isinstance(change, Delete):
        return "DELETE", {} if change.if_match is None else {"If-Match": change.if_match}, None
    assert isinstance(change, Put)
    headers = {"Content-Type": "application/octet-stream"}
    if change.if_match is not None:
        headers["If-Match"] = change.if_match
    if change.create_only:
        headers["If-None-Match"] = "*"
    return "PUT", headers, change.value


def _answer(member: str, resp: aiohttp.ClientResponse, body: bytes) -> Relayed:
    if resp.status < 300:
        return Relayed(resp.status, resp.headers.get("ETag"), body,
                       resp.headers.get("Content-Type") if body else None)
    try:
        detail = str(orjson.loads(body)["detail"])
    except (ValueError, KeyError, TypeError):
        detail = f"member {member} answered {resp.status}"
    error = _ERRORS.get(resp.status)
    if error is not None:
        raise error(detail)
    retry_after = resp.headers.get("Retry-After", "1")
    raise QuorumUnavailable(detail, indeterminate=resp.method != "GET",
                            retry_after=int(retry_after) if retry_after.isdigit() else 1)
