"""The peer protocol's encoding: msgpack, so values travel as raw bytes, not base64.

A batch is an envelope `{"from", "inc", "config", "msgs": [...]}` (the configuration every
message of the batch was made under); the reply is `{"inc", "replies": [...]}` in the same
order. Decoding is strict: a malformed message raises `ValueError`, never anything else.

A batch travels either as the body of `POST /internal/v1/batch` or, between replicas, as one
binary frame on the websocket `GET /internal/v1/stream`: a 10-byte header (request id,
status; big-endian) then the body. A request frame has status 0; its reply frame carries the
same id and the HTTP status the POST would have had, so both forms answer alike.
"""

from __future__ import annotations

import math
import struct
from typing import Any, NamedTuple

import msgpack

from quorumkv.core.acceptor import Accepted, Conflict, Promise
from quorumkv.core.ballot import Ballot
from quorumkv.core.changes import Delete, Identity, Outcome, Put, Single
from quorumkv.core.messages import (
    Accept,
    BucketQuery,
    BucketReply,
    DigestQuery,
    DigestReply,
    FastAccept,
    Forward,
    Forwarded,
    ForwardFailed,
    Prepare,
    Purge,
    PurgeReply,
    Read,
    Reply,
    Request,
    SyncQuery,
    SyncReply,
    Unchanged,
)
from quorumkv.core.quorum import Config
from quorumkv.replication.digests import BUCKETS
from quorumkv.storage.codec import (
    ballot_or_none,
    register_from_wire,
    register_to_wire,
    voter_set,
)

PROTOCOL = 4
"""The version of this protocol, sent with every answer; a peer that does not say is 1.
2 added fast creates (`FastAccept`, fast votes in promises), which a coordinator sends only
when every voter speaks 2: a replica of 1 refuses a whole batch holding one (a rolling
upgrade has both for a while). 3 added the deadline of a `Forward` (`expires`), sent only
to a home that speaks 3. 4 added `settled` and `ready` to every answer (whether the
answering replica may be the home, and whether it is ready: `Coordinator.settled`); a peer
that does not say is taken as settled and ready, as every replica was before."""
FAST_CREATES = 2
FORWARD_DEADLINES = 3

PeerRequest = Request | SyncQuery | Forward | Purge
PeerReply = Reply | SyncReply | Forwarded | ForwardFailed | PurgeReply | Unchanged


class Envelope(NamedTuple):
    sender: str
    incarnation: str
    config: Config
    messages: list[PeerRequest]


class Answers(NamedTuple):
    incarnation: str
    replies: list[PeerReply | Failure]
    protocol: int
    settled: bool
    ready: bool


class Failure(NamedTuple):
    """A message the receiver could not process (it says why); counts as no reply."""

    reason: str


def encode_request(msg: PeerRequest) -> list[Any]:
    if isinstance(msg, Read):
        return ["r", msg.key] if msg.known is None else ["r", msg.key, msg.known.to_wire()]
    if isinstance(msg, Prepare):
        return ["p", msg.key, msg.ballot.to_wire()]
    if isinstance(msg, Accept | FastAccept):
        nxt = None if msg.next_promise is None else msg.next_promise.to_wire()
        vote = [msg.key, msg.ballot.to_wire(), register_to_wire(msg.register), nxt]
        return ["a", *vote] if isinstance(msg, Accept) else ["c", *vote, sorted(msg.voters)]
    if isinstance(msg, DigestQuery):
        return ["d"]
    if isinstance(msg, Forward):
        forward = ["f", msg.key, encode_change(msg.change)]
        return forward if msg.expires is None else [*forward, msg.expires]
    if isinstance(msg, Purge):
        return ["g", msg.key, msg.accepted.to_wire()]
    return ["b", msg.bucket]


def encode_change(change: Single) -> list[Any]:
    if isinstance(change, Put):
        return ["put", change.value, change.if_match, change.create_only]
    if isinstance(change, Delete):
        return ["del", change.if_match]
    return ["id"]


def decode_change(raw: Any) -> Single:
    if isinstance(raw, list) and raw:
        kind, args = raw[0], raw[1:]
        if kind == "put" and len(args) == 3 and isinstance(args[0], bytes) \
                and isinstance(args[1], str | None) and isinstance(args[2], bool):
            return Put(args[0], args[1], args[2])
        if kind == "del" and len(args) == 1 and isinstance(args[0], str | None):
            return Delete(args[0])
        if kind == "id" and not args:
            return Identity()
    raise ValueError(f"malformed change {raw!r}")


def decode_request(raw: Any) -> PeerRequest:
    if not isinstance(raw, list) or not raw or not isinstance(raw[0], str):
        raise ValueError("a message must be a non-empty list starting with its type")
    kind, args = raw[0], raw[1:]
    if kind in ("r", "p", "a", "c", "f", "g") and not (args and isinstance(args[0], str)):
        raise ValueError("a key must be a string")
    if kind == "r" and len(args) in (1, 2):
        return Read(args[0], None if len(args) == 1 else Ballot.from_wire(args[1]))
    if kind == "p" and len(args) == 2:
        return Prepare(args[0], Ballot.from_wire(args[1]))
    if (kind == "a" and len(args) == 4) or (kind == "c" and len(args) == 5):
        vote = (args[0], Ballot.from_wire(args[1]), register_from_wire(args[2]),
                ballot_or_none(args[3]))
        return Accept(*vote) if kind == "a" else FastAccept(*vote, voter_set(args[4]))
    if kind == "d" and not args:
        return DigestQuery()
    if kind == "f" and len(args) in (2, 3):
        return Forward(args[0], decode_change(args[1]),
                       _deadline(args[2]) if len(args) == 3 else None)
    if kind == "g" and len(args) == 2:
        return Purge(args[0], Ballot.from_wire(args[1]))
    if kind == "b" and len(args) == 1 and isinstance(args[0], int) and 0 <= args[0] < BUCKETS:
        return BucketQuery(args[0])
    raise ValueError(f"unknown or malformed message {kind!r}")


def encode_reply(reply: PeerReply | Failure) -> list[Any]:
    if isinstance(reply, Promise):
        promise = ["P", reply.accepted.to_wire(), register_to_wire(reply.register)]
        return [*promise, sorted(reply.fast)] if reply.fast else promise
    if isinstance(reply, Accepted):
        return ["A"]
    if isinstance(reply, Conflict):
        return ["C", reply.seen.to_wire()]
    if isinstance(reply, DigestReply):
        return ["D", list(reply.buckets)]
    if isinstance(reply, BucketReply):
        return ["B", [[k, None if v is None else v.to_wire()] for k, v in reply.entries]]
    if isinstance(reply, Forwarded):
        return ["R", reply.outcome.value, register_to_wire(reply.register)]
    if isinstance(reply, ForwardFailed):
        return ["X", reply.detail, reply.indeterminate]
    if isinstance(reply, PurgeReply):
        return ["G", reply.purged]
    if isinstance(reply, Unchanged):
        return ["U"]
    return ["E", reply.reason]


def decode_reply(raw: Any) -> PeerReply | Failure:
    if not isinstance(raw, list) or not raw:
        raise ValueError("a reply must be a non-empty list")
    kind = raw[0]
    if kind == "P" and len(raw) in (3, 4):
        fast = voter_set(raw[3]) if len(raw) == 4 else frozenset()
        return Promise(Ballot.from_wire(raw[1]), register_from_wire(raw[2]), fast)
    if kind == "A":
        return Accepted()
    if kind == "C" and len(raw) == 2:
        return Conflict(Ballot.from_wire(raw[1]))
    if kind == "D" and len(raw) == 2:
        return DigestReply(tuple(int(x) for x in raw[1]))
    if kind == "B" and len(raw) == 2:
        return BucketReply(tuple((str(k), ballot_or_none(v)) for k, v in raw[1]))
    if kind == "R" and len(raw) == 3:
        return Forwarded(Outcome(raw[1]), register_from_wire(raw[2]))
    if kind == "X" and len(raw) == 3:
        return ForwardFailed(str(raw[1]), bool(raw[2]))
    if kind == "U" and len(raw) == 1:
        return Unchanged()
    if kind == "G" and len(raw) == 2 and isinstance(raw[1], bool):
        return PurgeReply(raw[1])
    if kind == "E" and len(raw) == 2:
        return Failure(str(raw[1]))
    raise ValueError(f"unknown or malformed reply {kind!r}")


def _deadline(raw: Any) -> float:
    """A forward's deadline: a finite number of seconds since the epoch."""
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise ValueError(f"malformed deadline of a forward: {raw!r}")
    return raw


def pack_envelope(sender: str, incarnation: str, config: Config,
                  msgs: list[PeerRequest]) -> bytes:
    body = {"from": sender, "inc": incarnation, "config": config.to_json(),
            "msgs": [encode_request(m) for m in msgs]}
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return packed


def unpack_envelope(data: bytes) -> Envelope:
    try:
        body = msgpack.unpackb(data, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise ValueError(f"not a msgpack body: {exc}") from None
    if not isinstance(body, dict):
        raise ValueError("the envelope must be a map")
    sender, inc, config, msgs = (body.get(k) for k in ("from", "inc", "config", "msgs"))
    if not (isinstance(sender, str) and isinstance(inc, str) and isinstance(msgs, list)):
        raise ValueError("the envelope needs from, inc, config and msgs")
    try:
        return Envelope(sender, inc, _config(config), [decode_request(m) for m in msgs])
    except (TypeError, KeyError, IndexError, AttributeError) as exc:  # wrong shapes
        raise ValueError(f"malformed envelope: {exc!r}") from None


_last_config: tuple[Any, Config | None] = (None, None)


def _config(raw: Any) -> Config:
    """Parse an envelope's configuration; it rarely changes, so remember the last one."""
    global _last_config
    if raw == _last_config[0] and _last_config[1] is not None:
        return _last_config[1]
    config = Config.from_json(raw)
    _last_config = (raw, config)
    return config


def pack_replies(incarnation: str, replies: list[PeerReply | Failure], *,
                 settled: bool, ready: bool) -> bytes:
    body = {"inc": incarnation, "proto": PROTOCOL, "settled": settled, "ready": ready,
            "replies": [encode_reply(r) for r in replies]}
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return packed


def unpack_replies(data: bytes) -> Answers:
    try:
        body = msgpack.unpackb(data, raw=False)
    except Exception as exc:
        raise ValueError(f"not a msgpack body: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("inc"), str) \
            or not isinstance(body.get("replies"), list):
        raise ValueError("the reply envelope needs inc and replies")
    protocol = body.get("proto", 1)
    if not isinstance(protocol, int):
        raise ValueError("the protocol version must be an integer")
    settled, ready = body.get("settled", True), body.get("ready", True)
    if not isinstance(settled, bool) or not isinstance(ready, bool):
        raise ValueError("settled and ready must be true or false")
    try:
        return Answers(body["inc"], [decode_reply(r) for r in body["replies"]], protocol,
                       settled, ready)
    except (TypeError, KeyError, IndexError, AttributeError) as exc:  # wrong shapes
        raise ValueError(f"malformed replies: {exc!r}") from None


FRAME_HEADER = struct.Struct(">QH")  # request id, status


def pack_frame(request_id: int, status: int, body: bytes) -> bytes:
    return FRAME_HEADER.pack(request_id, status) + body


def unpack_frame(data: bytes) -> tuple[int, int, bytes]:
    """(request id, status, body) of a stream frame; `ValueError` if it is too short."""
    if len(data) < FRAME_HEADER.size:
        raise ValueError(f"a stream frame needs a {FRAME_HEADER.size}-byte header")
    request_id, status = FRAME_HEADER.unpack_from(data)
    return request_id, status, data[FRAME_HEADER.size:]
