"""The peer endpoint: one request carries a batch of protocol messages, answered in order.

Acceptor messages are judged in order, then the whole batch waits for the group commit(s)
holding its state changes, so one fsync usually covers the batch.
"""

from __future__ import annotations

import asyncio
import hmac
import logging

import orjson
from aiohttp import web

from quorumkv.core.messages import (
    BucketQuery,
    BucketReply,
    DigestQuery,
    DigestReply,
    Forward,
    Forwarded,
    ForwardFailed,
)
from quorumkv.errors import BadRequest, QuorumUnavailable
from quorumkv.http.errors import Handler, error_response
from quorumkv.http.keys import NODE
from quorumkv.node import Node
from quorumkv.replication.transport import BATCH_PATH
from quorumkv.replication.wire import (
    Failure,
    PeerReply,
    pack_replies,
    unpack_envelope,
)

log = logging.getLogger("quorumkv.peer_api")

INTERNAL_PREFIX = "/internal/"

routes = web.RouteTableDef()


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every `/internal/` request needs the shared token when one is configured."""
    if request.path.startswith(INTERNAL_PREFIX):
        token = request.app[NODE].settings.auth_token
        if token is not None:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return error_response(401, "unauthorized",
                                      "peer requests need `Authorization: Bearer <token>`",
                                      {"WWW-Authenticate": "Bearer"})
    return await handler(request)


@routes.post(BATCH_PATH)
async def batch(request: web.Request) -> web.Response:
    node = request.app[NODE]
    try:
        envelope = unpack_envelope(await request.read())
    except ValueError as exc:
        raise BadRequest(f"malformed peer batch: {exc}") from None
    membership = node.membership
    if envelope.config.epoch > membership.config.epoch:
        adopted = membership.adopt(envelope.config)
        if adopted is not None:
            await asyncio.shield(adopted)  # act on a configuration only once it is durable
    if envelope.config != membership.config:
        return _refuse(node, "stale_epoch" if envelope.config.epoch < membership.config.epoch
                       else "conflicting_config",
                       f"the batch was made under epoch {envelope.config.epoch}; this node is "
                       f"at epoch {membership.config.epoch}")
    if envelope.messages and not membership.config.initialized:
        return _refuse(node, "not_initialized", "this replica has not joined a cluster yet")
    if not membership.admits(envelope.sender, envelope.incarnation):
        log.warning("refused a peer of unknown identity", extra={
            "peer": envelope.sender, "incarnation": envelope.incarnation,
            "known": membership.known_incarnation(envelope.sender)})
        return _refuse(node, "unknown_identity",
                       f"node {envelope.sender!r} is not a voting member as incarnation "
                       f"{envelope.incarnation}")
    replies: list[PeerReply | Failure] = []
    waits: set[asyncio.Future[None]] = set()
    forwarded: dict[int, asyncio.Task[PeerReply]] = {}
    for message in envelope.messages:
        if isinstance(message, Forward):
            forwarded[len(replies)] = asyncio.create_task(_run_forwarded(node, message))
            replies.append(Failure("pending"))
        elif isinstance(message, DigestQuery):
            replies.append(DigestReply(tuple(node.local.digests.buckets)))
        elif isinstance(message, BucketQuery):
            replies.append(BucketReply(tuple(node.local.bucket_versions(message.bucket))))
        else:
            reply, durable = node.local.apply(message)
            replies.append(reply)
            if durable is not None:
                waits.add(durable)
    # shielded: the commit is shared with other requests, which a disconnect must not cancel
    if len(waits) == 1:
        await asyncio.shield(waits.pop())
    elif waits:
        await asyncio.gather(*(asyncio.shield(w) for w in waits))
    for index, task in forwarded.items():
        replies[index] = await task
    return web.Response(body=pack_replies(node.incarnation, replies),
                        content_type="application/msgpack")


async def _run_forwarded(node: Node, message: Forward) -> PeerReply:
    """Run a change forwarded to us as the key's home; never forward it again."""
    assert node.coordinator is not None
    try:
        outcome, register = await node.coordinator.change(message.key, message.change,
                                                          local_only=True)
    except QuorumUnavailable as exc:
        return ForwardFailed(exc.detail, exc.indeterminate)
    return Forwarded(outcome, register)


def _refuse(node: Node, error: str, detail: str) -> web.Response:
    """409 with our configuration, so the sender can adopt it if it is newer."""
    body = {"error": error, "detail": detail, "config": node.membership.config.to_json()}
    return web.Response(status=409, body=orjson.dumps(body), content_type="application/json")


