"""The peer endpoints: a batch of protocol messages, answered in order.

Replicas keep a websocket (`/internal/v1/stream`) open to each other and send each batch as
one frame; `POST /internal/v1/batch` answers the same batch as one request (for tools and
tests: simpler to call, slower per batch). Acceptor messages are judged in order, then the
whole batch waits for the group commit(s) holding its state changes, so one fsync usually
covers the batch. Frames of one stream are answered concurrently, each as soon as it is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from quorumkv.core.acceptor import Promise
from quorumkv.core.messages import (
    BucketQuery,
    BucketReply,
    DigestQuery,
    DigestReply,
    Forward,
    Purge,
    PurgeReply,
    Read,
    Unchanged,
)
from quorumkv.http.auth import requires_token
from quorumkv.http.errors import error_body
from quorumkv.http.keys import MAX_FRAME, NODE, STREAMS
from quorumkv.node import Node
from quorumkv.replication.stream import STREAM_PATH
from quorumkv.replication.wire import (
    Failure,
    PeerReply,
    pack_frame,
    pack_replies,
    unpack_envelope,
    unpack_frame,
)

log = logging.getLogger("quorumkv.peer_api")

BATCH_PATH = "/internal/v1/batch"
MSGPACK = "application/msgpack"
JSON = "application/json"

routes = web.RouteTableDef()


@routes.post(BATCH_PATH)
@requires_token
async def batch(request: web.Request) -> web.Response:
    status, body = await answer_batch(request.app[NODE], await request.read())
    return web.Response(status=status, body=body,
                        content_type=MSGPACK if status == 200 else JSON)


@routes.get(STREAM_PATH)
@requires_token
async def stream(request: web.Request) -> web.WebSocketResponse:
    """Answer every binary frame (a batch) with a frame of the same id, concurrently."""
    node = request.app[NODE]
    ws = web.WebSocketResponse(max_msg_size=request.app[MAX_FRAME], compress=False)
    await ws.prepare(request)
    request.app[STREAMS].add(ws)
    answering: set[asyncio.Task[None]] = set()
    try:
        async for msg in ws:
            if msg.type is not WSMsgType.BINARY:
                await ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=b"binary frames only")
                break
            try:
                request_id, _, body = unpack_frame(msg.data)
            except ValueError as exc:
                await ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=str(exc).encode())
                break
            task = asyncio.create_task(_answer_frame(node, ws, request_id, body))
            answering.add(task)
            task.add_done_callback(answering.discard)
    finally:
        request.app[STREAMS].discard(ws)
    return ws


async def close_streams(app: web.Application) -> None:
    """On shutdown: peers reconnect elsewhere or later; nothing waits for these."""
    streams: set[web.WebSocketResponse] = app[STREAMS]
    for ws in list(streams):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"replica shutting down")


async def _answer_frame(node: Node, ws: web.WebSocketResponse, request_id: int,
                        body: bytes) -> None:
    try:
        status, answer = await answer_batch(node, body)
    except Exception:  # a bug: answer as the POST would (500), never leave the sender waiting
        log.exception("unexpected error answering a peer frame")
        status, answer = 500, error_body("internal_error", "see the replica's log")
    if not ws.closed:  # the sender gave up on this stream; it retries on a new one
        with contextlib.suppress(ConnectionError):
            await ws.send_bytes(pack_frame(request_id, status, answer))


async def answer_batch(node: Node, data: bytes) -> tuple[int, bytes]:
    """(status, body) for one batch: 200 and the replies, 400 if malformed, 409 if made
    under another configuration, by an unknown identity or in another cluster."""
    try:
        envelope = unpack_envelope(data)
    except ValueError as exc:
        return 400, error_body("bad_request", f"malformed peer batch: {exc}")
    membership = node.membership
    if envelope.config.foreign_to(membership.config):
        if membership.first_refusal(envelope.sender, envelope.incarnation):
            log.warning("refused a replica of another cluster", extra={
                "peer": envelope.sender, "incarnation": envelope.incarnation,
                "its_cluster": envelope.config.cluster, "cluster": membership.config.cluster})
        return _refuse(node, "foreign_cluster",
                       f"node {envelope.sender!r} belongs to cluster {envelope.config.cluster}; "
                       f"this replica belongs to cluster {membership.config.cluster}")
    if envelope.config.epoch > membership.config.epoch:
        adopted = membership.adopt(envelope.config)
        if adopted is not None:
            await asyncio.shield(adopted)  # act on a configuration only once it is durable
    if not envelope.config.agrees_with(membership.config):
        return _refuse(node, "stale_epoch" if envelope.config.epoch < membership.config.epoch
                       else "conflicting_config",
                       f"the batch was made under epoch {envelope.config.epoch}; this node is "
                       f"at epoch {membership.config.epoch}")
    if envelope.messages and not membership.config.initialized:
        return _refuse(node, "not_initialized", "this replica has not joined a cluster yet")
    if not membership.admits(envelope.sender, envelope.incarnation):
        if membership.first_refusal(envelope.sender, envelope.incarnation):
            log.warning("refused a peer of unknown identity", extra={
                "peer": envelope.sender, "incarnation": envelope.incarnation,
                "known": membership.known_incarnation(envelope.sender),
                "epoch": membership.config.epoch})
        return _refuse(node, "unknown_identity",
                       f"node {envelope.sender!r} is not a voting member as incarnation "
                       f"{envelope.incarnation}")
    membership.learn_cluster_id(envelope.config)
    replies: list[PeerReply | Failure] = []
    waits: set[asyncio.Future[None]] = set()
    forwarded: dict[int, asyncio.Task[PeerReply]] = {}
    for message in envelope.messages:
        if isinstance(message, Forward):
            assert node.coordinator is not None
            forwarded[len(replies)] = asyncio.create_task(
                node.coordinator.run_forwarded(message))
            replies.append(Failure("pending"))
        elif isinstance(message, DigestQuery):
            replies.append(DigestReply(tuple(node.local.digests.buckets)))
        elif isinstance(message, BucketQuery):
            replies.append(BucketReply(tuple(node.local.bucket_versions(message.bucket))))
        elif isinstance(message, Purge):
            purged = node.local.purge(message.key, message.accepted)
            replies.append(PurgeReply(purged is not None))
            if purged is not None:
                waits.add(purged)
        else:
            reply, durable = node.local.apply(message)
            unchanged = isinstance(message, Read) and message.known is not None \
                and isinstance(reply, Promise) and reply.accepted == message.known
            replies.append(Unchanged() if unchanged else reply)
            if durable is not None:
                waits.add(durable)
    # shielded: the commit is shared with other requests, which a disconnect must not cancel
    if len(waits) == 1:
        await asyncio.shield(waits.pop())
    elif waits:
        await asyncio.gather(*(asyncio.shield(w) for w in waits))
    for index, task in forwarded.items():
        replies[index] = await task
    coordinator = node.coordinator
    return 200, pack_replies(node.incarnation, replies,
                             settled=coordinator is not None and coordinator.settled(),
                             ready=coordinator is not None and coordinator.ready)


def _refuse(node: Node, error: str, detail: str) -> tuple[int, bytes]:
    """409 with our configuration, so the sender can adopt it if it is newer."""
    return 409, orjson.dumps({"error": error, "detail": detail,
                              "config": node.membership.config.to_json()})



