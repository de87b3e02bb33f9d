"""The client API of SPEC.md: keys, health, readiness, metrics, cluster view."""

from __future__ import annotations

import time
from importlib import resources

import orjson
from aiohttp import web
from aiohttp.web_urldispatcher import _default_expect_handler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from quorumkv.errors import (
    BadRequest,
    NotFound,
    ServiceError,
    UnsupportedTransferCoding,
    ValueTooLarge,
)
from quorumkv.http import kv, relay
from quorumkv.http.errors import error_response
from quorumkv.http.keys import NODE
from quorumkv.node import Node

KEY_ROUTE = kv.KV_PREFIX + r"{tail:[\s\S]*}"  # the key is taken from the raw path (kv.key_of)

routes = web.RouteTableDef()


@routes.get(KEY_ROUTE)
async def get_key(request: web.Request) -> web.Response:
    node = request.app[NODE]
    return _response(await kv.observed(node, "get", _get(node, request)))


async def _get(node: Node, request: web.Request) -> kv.Answer:
    return await kv.get(node, kv.key_of(request.raw_path), _header(request, "If-Match"),
                        _header(request, "If-None-Match"), relayed=_relayed(request))


async def _expect_value(request: web.Request) -> web.StreamResponse | None:
    """`Expect: 100-continue`: a value we would refuse is refused before the client sends
    it, not told `100 Continue` first. (Runs outside the middlewares: it answers errors
    itself.)"""
    started = time.perf_counter()
    try:
        _check_value_headers(request)
        await _default_expect_handler(request)  # 100 Continue; 417 for any other Expect
    except ServiceError as exc:
        refusal = error_response(exc.status, exc.error, exc.detail)
    except web.HTTPExpectationFailed as exc:
        refusal = error_response(exc.status, "expectation_failed", exc.text or "")
    else:
        return None
    kv.record(request.app[NODE], "put", refusal.status, started)
    # the client may send the body anyway, or its next request instead: only a new
    # connection tells them apart (found by testing: a next request was read as the body)
    refusal.force_close()
    return refusal


@routes.put(KEY_ROUTE, expect_handler=_expect_value)
async def put_key(request: web.Request) -> web.Response:
    node = request.app[NODE]
    return _response(await kv.observed(node, "put", _put(node, request)))


async def _put(node: Node, request: web.Request) -> kv.Answer:
    key = kv.key_of(request.raw_path)
    _check_value_headers(request)
    change = kv.put_change(b"", _header(request, "If-Match"), _header(request, "If-None-Match"))
    try:
        value = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ValueTooLarge(f"the value is larger than the limit of "
                            f"{node.settings.max_value_bytes} bytes") from None
    kv.check_length(node, len(value))
    return await kv.put(node, key, change._replace(value=value), relayed=_relayed(request))


@routes.delete(KEY_ROUTE)
async def delete_key(request: web.Request) -> web.Response:
    node = request.app[NODE]
    return _response(await kv.observed(node, "delete", _delete(node, request)))


async def _delete(node: Node, request: web.Request) -> kv.Answer:
    change = kv.delete_change(_header(request, "If-Match"), _header(request, "If-None-Match"))
    return await kv.delete(node, kv.key_of(request.raw_path), change, relayed=_relayed(request))


def _response(answer: kv.Answer) -> web.Response:
    headers = {} if answer.etag is None else {"ETag": answer.etag}
    return web.Response(status=answer.status, body=answer.body or None,
                        content_type=answer.content_type, headers=headers)


def _check_value_headers(request: web.Request) -> None:
    """Refuse, before reading it, a body we would store as something else than the client
    meant (found by adversarial testing: each of these was stored as sent):

    - a transfer coding other than chunked: aiohttp decodes chunked only, so the value of
      `Transfer-Encoding: gzip, chunked` was the compressed bytes (RFC 9112, 6.1: 501);
    - `Content-Range`: a part of a value, which a PUT cannot store (RFC 9110, 14.5: 400);
    - a `Content-Length` Python cannot read (over 4,300 digits) was a 500.
    """
    kv.check_encoding(request.headers.get("Content-Encoding"))
    codings = [c.strip().lower() for value in request.headers.getall("Transfer-Encoding", [])
               for c in value.split(",")]
    if any(coding != "chunked" for coding in codings):
        raise UnsupportedTransferCoding(f"Transfer-Encoding {', '.join(codings)!r} is not "
                                        "supported: send the value as it is, or chunked")
    if "Content-Range" in request.headers:
        raise BadRequest("Content-Range: a PUT stores a whole value, not a part of one")
    try:
        length = request.content_length
    except ValueError:
        raise BadRequest("Content-Length is not a number this server can read") from None
    if length is not None:
        kv.check_length(request.app[NODE], length)


def _relayed(request: web.Request) -> bool:
    return relay.RELAYED_HEADER in request.headers


def _header(request: web.Request, name: str) -> str | None:
    """A header as clean text: aiohttp keeps undecodable bytes as lone surrogates, which no
    entity tag of ours contains (so they only fail to match) but nothing can encode."""
    values = request.headers.getall(name, None)
    if values is None:
        return None
    value = ", ".join(values)  # repeated lines are one list (RFC 9110, 5.3)
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


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
