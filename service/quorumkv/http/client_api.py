"""The client API of SPEC.md: keys, health, readiness, metrics, cluster view."""

from __future__ import annotations

import time
from importlib import resources

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from quorumkv.core.changes import Change, Delete, Outcome, Put
from quorumkv.core.keys import InvalidKey, decode_key
from quorumkv.core.register import Register
from quorumkv.errors import (
    BadRequest,
    NotFound,
    PreconditionFailed,
    QuorumUnavailable,
    ValueTooLarge,
)
from quorumkv.http.keys import NODE

KV_PREFIX = "/v1/kv/"

routes = web.RouteTableDef()


def key_of(request: web.Request) -> str:
    """The key from the raw path: percent-decoded by us, strictly, so `%2F` stays in the key."""
    raw = request.raw_path.split("?", 1)[0]
    try:
        return decode_key(raw[len(KV_PREFIX):])
    except InvalidKey as exc:
        raise BadRequest(str(exc)) from None


def _observe(request: web.Request, op: str, status: int, started: float) -> None:
    request.app[NODE].metrics.observe_request(op, status, time.perf_counter() - started)


@routes.get(KV_PREFIX + r"{tail:[\s\S]*}")
async def get_key(request: web.Request) -> web.Response:
    started = time.perf_counter()
    key = key_of(request)
    node = request.app[NODE]
    assert node.coordinator is not None
    try:
        register = await node.coordinator.read(key)
    except QuorumUnavailable as exc:
        _observe_unavailable(request, "get", exc, started)
        raise
    if register.value is None:
        _observe(request, "get", 404, started)
        raise NotFound(f"key {key!r} does not exist")
    _observe(request, "get", 200, started)
    return web.Response(body=register.value, content_type="application/octet-stream",
                        headers={"ETag": register.etag or ""})


@routes.put(KV_PREFIX + r"{tail:[\s\S]*}")
async def put_key(request: web.Request) -> web.Response:
    started = time.perf_counter()
    key = key_of(request)
    node = request.app[NODE]
    limit = node.settings.max_value_bytes
    if request.content_length is not None and request.content_length > limit:
        raise ValueTooLarge(f"the value is {request.content_length} bytes; the limit is {limit}")
    if_match = _header(request, "If-Match")
    if_none_match = _header(request, "If-None-Match")
    if if_none_match is not None and if_none_match.strip() != "*":
        raise BadRequest("only `If-None-Match: *` (create-only) is supported on PUT")
    if if_none_match is not None and if_match is not None:
        raise BadRequest("If-Match and If-None-Match cannot be combined")
    try:
        value = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ValueTooLarge(f"the value is larger than the limit of {limit} bytes") from None
    if len(value) > limit:
        raise ValueTooLarge(f"the value is {len(value)} bytes; the limit is {limit}")
    change = Put(value, if_match=if_match, create_only=if_none_match is not None)
    outcome, register = await _change(request, "put", key, change, started)
    status = {Outcome.CREATED: 201, Outcome.REPLACED: 200}.get(outcome)
    _observe(request, "put", status or 412, started)
    if status is None:
        raise PreconditionFailed(_precondition_detail(key, register))
    return web.Response(status=status, headers={"ETag": register.etag or ""})


@routes.delete(KV_PREFIX + r"{tail:[\s\S]*}")
async def delete_key(request: web.Request) -> web.Response:
    started = time.perf_counter()
    key = key_of(request)
    outcome, register = await _change(request, "delete", key,
                                      Delete(_header(request, "If-Match")), started)
    if outcome is Outcome.DELETED:
        _observe(request, "delete", 204, started)
        return web.Response(status=204)
    if outcome is Outcome.NOT_FOUND:
        _observe(request, "delete", 404, started)
        raise NotFound(f"key {key!r} does not exist")
    _observe(request, "delete", 412, started)
    raise PreconditionFailed(_precondition_detail(key, register))


def _header(request: web.Request, name: str) -> str | None:
    """A header as clean text: aiohttp keeps undecodable bytes as lone surrogates, which no
    entity tag of ours contains (so they only fail to match) but nothing can encode."""
    value = request.headers.get(name)
    if value is None:
        return None
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


async def _change(
    request: web.Request, op: str, key: str, change: Change, started: float
) -> tuple[Outcome, Register]:
    node = request.app[NODE]
    assert node.coordinator is not None
    try:
        return await node.coordinator.change(key, change)
    except QuorumUnavailable as exc:
        _observe_unavailable(request, op, exc, started)
        raise


def _observe_unavailable(
    request: web.Request, op: str, exc: QuorumUnavailable, started: float
) -> None:
    request.app[NODE].metrics.quorum_failures.labels(op, str(exc.indeterminate).lower()).inc()
    _observe(request, op, 503, started)


def _precondition_detail(key: str, register: Register) -> str:
    if register.exists:
        return f"key {key!r} is at version {register.etag}"
    return f"key {key!r} does not exist"


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"}, dumps=lambda o: orjson.dumps(o).decode())


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    ready, reason = request.app[NODE].readiness
    body = orjson.dumps({"ready": ready, "reason": reason})
    return web.Response(status=200 if ready else 503, body=body,
                        content_type="application/json")


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[NODE].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@routes.get("/v1/cluster")
async def cluster(request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps(request.app[NODE].cluster_info()),
                        content_type="application/json")


@routes.get("/openapi.yaml")
async def openapi(request: web.Request) -> web.Response:
    spec = resources.files("quorumkv.http").joinpath("openapi.yaml")
    if not spec.is_file():
        raise NotFound("this build has no OpenAPI document")
    return web.Response(body=spec.read_bytes(), content_type="application/yaml")
