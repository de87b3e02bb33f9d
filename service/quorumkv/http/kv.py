"""The key operations of the client API (SPEC.md), free of any HTTP framework.

Two HTTP front ends call these: the aiohttp routes (`client_api`) and the lean keep-alive path
(`fast_path`), so both answer a request the same way. Each function takes what it needs from
the request, already parsed, and returns the answer or raises a `ServiceError`. The front ends
run a whole key request, its parsing and checks included, inside `observed`, so every answer
is counted in the metrics once, the `400`s of a bad key as much as the `503`s.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import NamedTuple

from quorumkv.core.changes import Delete, Outcome, Put, Single
from quorumkv.core.keys import InvalidKey, decode_key
from quorumkv.core.register import Register, etag_listed
from quorumkv.errors import (
    BadRequest,
    NotFound,
    PreconditionFailed,
    QuorumUnavailable,
    ServiceError,
    UnsupportedEncoding,
    ValueTooLarge,
)
from quorumkv.http import relay
from quorumkv.node import Node

KV_PREFIX = "/v1/kv/"
OCTET_STREAM = "application/octet-stream"


class Answer(NamedTuple):
    status: int
    etag: str | None = None  # the ETag header, when the answer names a version
    body: bytes = b""
    content_type: str | None = None  # of `body`; None when the answer has no body


def key_of(raw_target: str) -> str:
    """The key from the raw request target (path and query, or the absolute form that
    proxies send: `http://host/v1/kv/...`), percent-decoded by us, strictly, so `%2F` stays
    in the key."""
    raw = raw_target.split("?", 1)[0]
    if not raw.startswith("/"):  # absolute form (RFC 9112, 3.2.2): the path after the host
        _, sep, rest = raw.partition("://")
        raw = rest[rest.find("/"):] if sep and "/" in rest else ""
    if not raw.startswith(KV_PREFIX):
        raise BadRequest(f"not a key path: {raw_target!r}")
    try:
        return decode_key(raw[len(KV_PREFIX):])
    except InvalidKey as exc:
        raise BadRequest(str(exc)) from None


def check_encoding(content_encoding: str | None) -> None:
    """Refuse a compressed value: a value is the body's bytes, and storing them while the
    client meant the inflated ones would hand back something else than it wrote."""
    if content_encoding is not None and content_encoding.strip().lower() != "identity":
        raise UnsupportedEncoding(f"Content-Encoding {content_encoding!r} is not supported: "
                                  "send the value as it is")


def check_length(node: Node, length: int) -> None:
    """Refuse a value longer than the limit, before reading it."""
    limit = node.settings.max_value_bytes
    if length > limit:
        raise ValueTooLarge(f"the value is {length} bytes; the limit is {limit}")


async def observed(node: Node, op: str, operation: Awaitable[Answer]) -> Answer:
    """Run a key request's `operation` and count its answer, or its error, under `op`."""
    started = time.perf_counter()
    try:
        answer = await operation
    except QuorumUnavailable as exc:
        node.metrics.quorum_failures.labels(op, str(exc.indeterminate).lower()).inc()
        record(node, op, exc.status, started)
        raise
    except ServiceError as exc:
        record(node, op, exc.status, started)
        raise
    record(node, op, answer.status, started)
    return answer


def record(node: Node, op: str, status: int, started: float) -> None:
    """Count one answer; for the few a front end gives outside `observed`."""
    node.metrics.observe_request(op, status, time.perf_counter() - started)


async def get(node: Node, key: str, if_match: str | None = None,
              if_none_match: str | None = None, *, relayed: bool = False) -> Answer:
    """A read, conditional as RFC 9110 (13.2.2) orders it: `If-Match` first (`412` unless
    the key exists at one of the versions, or any with `*`), then `If-None-Match` (`304`
    if it exists at one of them, weakly compared, or at all with `*`): a client that holds
    the value can ask for it only if it changed. `relayed`: the request was passed on to us
    by a replica outside the membership."""
    current = await _current(node, key, relayed)
    etag = None if current is None else current.etag
    if if_match is not None and not etag_listed(if_match, etag):
        raise PreconditionFailed(f"key {key!r} is at version {etag}" if etag is not None
                                 else f"key {key!r} does not exist")
    if if_none_match is not None and etag_listed(if_none_match, etag, weak=True):
        return Answer(304, etag)
    if current is None:
        raise NotFound(f"key {key!r} does not exist")
    return current


async def _current(node: Node, key: str, relayed: bool) -> Answer | None:
    """The key's value as a `200` answer, or None if it does not exist."""
    if not relayed and relay.needed(node):
        try:
            return await _relay(node, key, None)
        except NotFound:
            return None
    assert node.coordinator is not None
    register = await node.coordinator.read(key)
    if register.value is None:
        return None
    return Answer(200, register.etag or "", register.value, OCTET_STREAM)


def put_change(value: bytes, if_match: str | None, if_none_match: str | None) -> Put:
    """The change a PUT asks for; only `If-None-Match: *` (create-only) is supported."""
    if if_none_match is not None and if_none_match.strip() != "*":
        raise BadRequest("only `If-None-Match: *` (create-only) is supported on PUT")
    if if_none_match is not None and if_match is not None:
        raise BadRequest("If-Match and If-None-Match cannot be combined")
    return Put(value, if_match=if_match, create_only=if_none_match is not None)


async def put(node: Node, key: str, change: Put, *, relayed: bool = False) -> Answer:
    if not relayed and relay.needed(node):
        return await _relay(node, key, change)
    assert node.coordinator is not None
    outcome, register = await node.coordinator.change(key, change)
    status = {Outcome.CREATED: 201, Outcome.REPLACED: 200}.get(outcome)
    if status is None:
        raise PreconditionFailed(_precondition_detail(key, register))
    return Answer(status, register.etag or "")


def delete_change(if_match: str | None, if_none_match: str | None) -> Delete:
    """The change a DELETE asks for; a precondition it cannot honour is refused, never
    dropped (deleting anyway would ignore what the client made sure of)."""
    if if_none_match is not None:
        raise BadRequest("If-None-Match is not supported on DELETE; use If-Match")
    return Delete(if_match)


async def delete(node: Node, key: str, change: Delete, *, relayed: bool = False) -> Answer:
    if not relayed and relay.needed(node):
        return await _relay(node, key, change)
    assert node.coordinator is not None
    outcome, register = await node.coordinator.change(key, change)
    if outcome is Outcome.DELETED:
        return Answer(204)
    if outcome is Outcome.NOT_FOUND:
        raise NotFound(f"key {key!r} does not exist")
    raise PreconditionFailed(_precondition_detail(key, register))


async def _relay(node: Node, key: str, change: Single | None) -> Answer:
    node.metrics.paths.inc("relay")
    return Answer(*await relay.send(node, key, change))


def _precondition_detail(key: str, register: Register) -> str:
    if register.exists:
        return f"key {key!r} is at version {register.etag}"
    return f"key {key!r} does not exist"
