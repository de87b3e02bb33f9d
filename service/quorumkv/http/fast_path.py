"""A lean HTTP/1.1 path for the key API, in front of aiohttp.

Why: aiohttp's per-request machinery (request and response objects, router, middleware,
writer) costs about 26 µs of CPU per request on this machine, and a linearizable GET costs
about 90 µs across the whole cluster, so close to a third of a read went to HTTP bookkeeping.
This protocol answers the requests that make up nearly all traffic itself (a bare parse and
answer measured about 8 µs): well-formed HTTP/1.1 GET, PUT and DELETE of `/v1/kv/...` with
no body or a Content-Length one, through the same key operations as the aiohttp routes
(`http.kv`), byte for byte the same answers.

aiohttp stays the reference for everything else. A connection whose first request is anything
else (peer streams, health, metrics, admin) is handed to aiohttp at once. A request this
parser does not take exactly as it is (chunked or `Expect: 100-continue` bodies, HTTP/1.0,
upgrades, relayed requests, values over the limit, anything malformed or unusual) hands the
connection over from that request on, unparsed, so aiohttp answers it as it always did.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import NamedTuple, cast

from aiohttp.http import SERVER_SOFTWARE

from quorumkv.errors import ServiceError
from quorumkv.http import kv, relay
from quorumkv.http.errors import JSON, error_body, error_headers
from quorumkv.node import Node

log = logging.getLogger("quorumkv.http")

# A longer head goes to aiohttp, which refuses lines over its limit (16 KiB, server.MAX_LINE);
# a key request with the longest key (1024 bytes, all percent-encoded) needs about 3 KiB.
MAX_HEAD = 12 * 1024
KEEPALIVE_TIMEOUT = 75.0  # seconds an idle connection stays open (aiohttp's default)
SWEEP_INTERVAL = 15.0

_PREFIX = kv.KV_PREFIX.encode()
_OPS = {b"GET": "get", b"PUT": "put", b"DELETE": "delete"}  # method -> op in the metrics
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# control characters other than tab, and CR or LF outside a CRLF pair
_BAD_BYTES = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)|(?<!\r)\n")
_TARGET = re.compile(rb"/v1/kv/[!$&'()*+,;=:@/%\-.~?0-9A-Za-z_]+")
# headers that change how the message is framed or answered: aiohttp's to handle
_HAND_OVER_HEADERS = frozenset((b"transfer-encoding", b"expect", b"upgrade",
                                b"content-encoding", b"content-range",
                                relay.RELAYED_HEADER.lower().encode()))
_BARE_LF = re.compile(rb"(?<!\r)\n")
MAX_HEADERS = 64  # more header lines go to aiohttp (which refuses over 128)
_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}
_SERVER = b"Server: " + SERVER_SOFTWARE.encode() + b"\r\n"


class Request(NamedTuple):
    method: bytes
    target: str  # path and query, still percent-encoded
    if_match: str | None
    if_none_match: str | None
    body: bytes
    close: bool  # `Connection: close`: answer, then close


class HandOver(NamedTuple):
    """The request at the start of the buffer is aiohttp's to parse and answer."""

    reason: str


INCOMPLETE = None


def parse_request(buf: bytes, max_body: int) -> tuple[Request, int] | HandOver | None:
    """The request at the start of `buf` and where it ends; None if more bytes are needed;
    `HandOver` if it is anything but a plain key request."""
    if not buf[:1].isupper():  # no method: TLS sent to this port, say; aiohttp answers it
        return HandOver("not an HTTP request")
    end = buf.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
    if end < 0:
        if len(buf) >= MAX_HEAD + 4 or _BARE_LF.search(buf):
            return HandOver("head too long or not CRLF")
        return INCOMPLETE
    head = buf[:end]
    if _BAD_BYTES.search(head):
        return HandOver("control characters in the head")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[2] != b"HTTP/1.1" or parts[0] not in _OPS \
            or not parts[1].startswith(_PREFIX) or not _TARGET.fullmatch(parts[1]):
        return HandOver("not a plain HTTP/1.1 key request")
    if len(lines) > MAX_HEADERS:
        return HandOver("many headers")
    length = 0
    close = False
    seen: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            return HandOver("malformed header line")
        name = name.lower()
        if name in seen:  # aiohttp refuses some repeated headers (Host, ...): its call
            return HandOver(f"repeated {name.decode()}")
        value = value.strip(b" \t")
        seen[name] = value
        if name == b"content-length":
            if not value.isdigit() or len(value) > 18:
                return HandOver("malformed Content-Length")
            length = int(value)
        elif name == b"connection":
            close = b"close" in (token.strip() for token in value.lower().split(b","))
        elif name in _HAND_OVER_HEADERS:
            return HandOver(f"{name.decode()} header")
    if b"host" not in seen:
        return HandOver("no Host header")  # HTTP/1.1 requires one (RFC 9112, 3.2): a 400
    if length > max_body:
        return HandOver("body over the limit")
    body_start = end + 4
    if len(buf) < body_start + length:
        return INCOMPLETE
    return Request(parts[0], parts[1].decode("ascii"), _text(seen.get(b"if-match")),
                   _text(seen.get(b"if-none-match")), buf[body_start:body_start + length],
                   close), body_start + length


def _text(value: bytes | None) -> str | None:
    """A header value as clean text, as `client_api` reads it from aiohttp."""
    return None if value is None else value.decode("utf-8", "replace")


async def answer(node: Node, request: Request) -> kv.Answer:
    return await kv.observed(node, _OPS[request.method], _operation(node, request))


async def _operation(node: Node, request: Request) -> kv.Answer:
    key = kv.key_of(request.target)
    if request.method == b"GET":
        return await kv.get(node, key, request.if_match, request.if_none_match)
    if request.method == b"PUT":
        change = kv.put_change(request.body, request.if_match, request.if_none_match)
        return await kv.put(node, key, change)
    return await kv.delete(node, key, kv.delete_change(request.if_match, request.if_none_match))


def encode_answer(answer: kv.Answer, close: bool) -> bytes:
    """The response as aiohttp writes it for the same answer."""
    head = [b"HTTP/1.1 %d %s\r\n" % (answer.status, _REASONS[answer.status])]
    if answer.etag is not None:
        head.append(b"ETag: " + answer.etag.encode() + b"\r\n")
    return _finish(head, answer.status, answer.body, answer.content_type, close)


def encode_error(exc: ServiceError, close: bool) -> bytes:
    head = [b"HTTP/1.1 %d %s\r\n" % (exc.status, _REASONS[exc.status])]
    for name, value in error_headers(exc).items():
        head.append(f"{name}: {value}\r\n".encode())
    return _finish(head, exc.status, error_body(exc.error, exc.detail), JSON, close)


def _finish(head: list[bytes], status: int, body: bytes, content_type: str | None,
            close: bool) -> bytes:
    if content_type is not None:
        head.append(b"Content-Type: " + content_type.encode() + b"\r\n")
    if status not in (204, 304):  # answers that never have a body
        head.append(b"Content-Length: %d\r\n" % len(body))
    head.append(_date_header())
    head.append(_SERVER)
    if close:
        head.append(b"Connection: close\r\n")
    head.append(b"\r\n")
    head.append(body)
    return b"".join(head)


_date_cache: tuple[int, bytes] = (0, b"")


def _date_header() -> bytes:
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, f"Date: {formatdate(now, usegmt=True)}\r\n".encode())
    return _date_cache[1]


class KeyProtocol(asyncio.Protocol):
    """One client connection: answers its key requests one at a time, in order (so
    pipelined requests are answered in the order sent), until it hands the connection over."""

    def __init__(self, node: Node, fallback: Callable[[], asyncio.BaseProtocol],
                 connections: set[KeyProtocol]) -> None:
        self._node = node
        self._fallback = fallback
        self._connections = connections
        self._max_body = node.settings.max_value_bytes
        self._transport: asyncio.Transport | None = None
        self._buf = b""
        self._busy = False  # a request is being answered
        self._eof = False
        self._paused_by: set[str] = set()  # why reading is paused: "client", "pipeline"
        self._loop = asyncio.get_running_loop()  # made by the loop's server: it runs
        self.idle_since = 0.0

    @property
    def idle(self) -> bool:
        """No request is being answered (a partial one may be arriving, slowly)."""
        return not self._busy

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._connections.add(self)
        self.idle_since = self._loop.time()

    def data_received(self, data: bytes) -> None:
        # a request still arriving is no idle connection (found by testing: the sweep cut
        # uploads slower than the keep-alive timeout)
        self.idle_since = self._loop.time()
        self._buf = self._buf + data if self._buf else data
        if not self._busy:
            self._next()
        elif len(self._buf) > self._max_body + MAX_HEAD:
            self._pause_reading("pipeline")  # more than one whole request waits already

    def eof_received(self) -> bool:
        """Keep a half-closed connection open until the request in progress is answered."""
        self._eof = True
        return self._busy

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._connections.discard(self)

    def pause_writing(self) -> None:
        self._pause_reading("client")  # the client does not read its answers

    def resume_writing(self) -> None:
        self._resume_reading("client")
        if not self._busy:
            self._next()

    def _pause_reading(self, reason: str) -> None:
        if not self._paused_by and self._transport is not None:
            self._transport.pause_reading()
        self._paused_by.add(reason)

    def _resume_reading(self, reason: str) -> None:
        if reason not in self._paused_by:
            return
        self._paused_by.discard(reason)
        if not self._paused_by and self._transport is not None:
            self._transport.resume_reading()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _next(self) -> None:
        """Start answering the request at the head of the buffer, if it is complete, and
        the client reads its answers: pipelined requests already read are not answered
        into a write buffer the client does not drain (found by testing: 400 pipelined GETs
        of a 1 MiB value, never read, held 393 MiB until the connection closed)."""
        if self._transport is None or "client" in self._paused_by:
            return
        if not self._buf:
            if self._eof:
                self._transport.close()
            return
        parsed = parse_request(self._buf, self._max_body)
        if parsed is INCOMPLETE:
            if self._eof:
                self._hand_over(HandOver("truncated by the client"))  # aiohttp answers it
            return
        if isinstance(parsed, HandOver):
            self._hand_over(parsed)
            return
        request, end = parsed
        self._buf = self._buf[end:]
        self._busy = True
        self._loop.create_task(self._answer(request))

    async def _answer(self, request: Request) -> None:
        try:
            response = encode_answer(await answer(self._node, request), request.close)
        except ServiceError as exc:
            response = encode_error(exc, request.close)
        except Exception:  # a bug: answer as the aiohttp routes would, keep serving
            log.exception("unexpected error", extra={"method": request.method.decode(),
                                                     "path": request.target})
            response = encode_error(ServiceError("see the replica's log"), request.close)
        self._busy = False
        if self._transport is None:
            return  # the client went away; the operation itself completed
        self._transport.write(response)
        if request.close:
            self._transport.close()
            return
        self.idle_since = self._loop.time()
        self._resume_reading("pipeline")
        self._next()

    def _hand_over(self, why: HandOver) -> None:
        """Give the connection, from the buffered request on, to aiohttp."""
        log.debug("connection handed to aiohttp", extra={"reason": why.reason})
        transport, self._transport = self._transport, None
        assert transport is not None
        self._connections.discard(self)
        if self._paused_by:
            transport.resume_reading()
        protocol = self._fallback()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self._buf:
            assert isinstance(protocol, asyncio.Protocol)
            protocol.data_received(self._buf)
        if self._eof:
            assert isinstance(protocol, asyncio.Protocol)
            if not protocol.eof_received():
                transport.close()


class FastPath:
    """The protocol factory of the listening socket, and the connections it serves."""

    def __init__(self, node: Node, fallback: Callable[[], asyncio.BaseProtocol], *,
                 keepalive_timeout: float = KEEPALIVE_TIMEOUT,
                 sweep_interval: float = SWEEP_INTERVAL) -> None:
        self._node = node
        self._fallback = fallback
        self._keepalive_timeout = keepalive_timeout
        self._sweep_interval = sweep_interval
        self._connections: set[KeyProtocol] = set()

    def __call__(self) -> KeyProtocol:
        return KeyProtocol(self._node, self._fallback, self._connections)

    async def close_idle_connections(self) -> None:
        """Close connections idle for the keep-alive timeout, as aiohttp does with its own."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._sweep_interval)
            cutoff = loop.time() - self._keepalive_timeout
            for conn in list(self._connections):
                if conn.idle and conn.idle_since < cutoff:
                    conn.close()

    async def shutdown(self, timeout: float) -> None:
        """Close idle connections now, the others once their request is answered (or after
        `timeout` seconds)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._connections and loop.time() < deadline:
            for conn in list(self._connections):
                if conn.idle:
                    conn.close()
            if self._connections:
                await asyncio.sleep(0.05)
        for conn in list(self._connections):
            conn.close()
