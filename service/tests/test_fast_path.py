"""The lean HTTP path for key requests: what it takes, what it hands to aiohttp, and that
clients cannot tell the two apart (raw bytes on real sockets to real replicas)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, NamedTuple, cast

import orjson
import pytest
from quorumkv.client import Client
from quorumkv.http import kv
from quorumkv.http.fast_path import FastPath, HandOver, Request, encode_answer, parse_request
from quorumkv.node import Node
from replicas import Replicas

LIMIT = 1024


def test_a_plain_key_request_is_parsed_with_its_body_and_conditions() -> None:
    data = (b"PUT /v1/kv/a%2Fb?x=1 HTTP/1.1\r\nHost: h\r\nIf-Match: \"1.0.1\"\r\n"
            b"content-length: 3\r\n\r\nabcGET")
    parsed = parse_request(data, LIMIT)
    assert parsed == (Request(b"PUT", "/v1/kv/a%2Fb?x=1", '"1.0.1"', None, b"abc", False),
                      len(data) - 3)


def test_an_incomplete_request_waits_for_more_bytes() -> None:
    assert parse_request(b"GET /v1/kv/a HTTP/1.1\r\nHost: h\r\n", LIMIT) is None
    assert parse_request(b"PUT /v1/kv/a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nab",
                         LIMIT) is None


@pytest.mark.parametrize("data", [
    b"GET /healthz HTTP/1.1\r\n\r\n",
    b"HEAD /v1/kv/a HTTP/1.1\r\n\r\n",
    b"GET /v1/kv/a HTTP/1.0\r\n\r\n",
    b"GET /v1/kv/ HTTP/1.1\r\n\r\n",
    b"GET /v1/kv/a b HTTP/1.1\r\n\r\n",
    b"GET /v1/kv/\xc3\xa9 HTTP/1.1\r\n\r\n",
    b"GET http://h/v1/kv/a HTTP/1.1\r\n\r\n",
    b"PUT /v1/kv/a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"PUT /v1/kv/a HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
    b"GET /v1/kv/a HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n",
    b"PUT /v1/kv/a HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
    b"PUT /v1/kv/a HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
    b"PUT /v1/kv/a HTTP/1.1\r\nHost: h\r\nContent-Length: 1025\r\n\r\n",
    # found by adversarial testing: aiohttp refuses these, or reads them otherwise
    b"PUT /v1/kv/a HTTP/1.1\r\nHost: h\r\nContent-Length: " + b"0" * 4400 + b"1\r\n\r\nx",
    b"PUT /v1/kv/a HTTP/1.1\r\nContent-Length: 1\r\n\r\nx",  # no Host
    b"GET /v1/kv/a HTTP/1.1\r\nHost: h\r\nHost: i\r\n\r\n",
    b"GET /v1/kv/a HTTP/1.1\r\nHost: h\r\nUser-Agent: a\r\nUser-Agent: b\r\n\r\n",
    b"GET /v1/kv/a HTTP/1.1\r\nHost: h\r\n" + b"X: y\r\n" * 64 + b"\r\n",
    b"PUT /v1/kv/a HTTP/1.1\r\nHost: h\r\nContent-Range: bytes 0-0/9\r\nContent-Length: 1"
    b"\r\n\r\nx",
    b"GET /v1/kv/a HTTP/1.1\r\nHost: h\n\r\n",  # a bare LF: at once, not when more comes
    b"GET /v1/kv/a HTTP/1.1\r\nBad Name: x\r\n\r\n",
    b"GET /v1/kv/a HTTP/1.1\r\n folded: x\r\n\r\n",
    b"GET /v1/kv/a HTTP/1.1\r\nX: a\x00b\r\n\r\n",
    b"GET /v1/kv/a HTTP/1.1\nHost: h\n\n",
    b"GET /v1/kv/a HTTP/1.1\r\nX: " + b"y" * 40_000,
    b"GET /v1/kv/a HTTP/1.1\r\nX: " + b"y" * 20_000 + b"\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01",  # a TLS ClientHello: at once, not after a head that never ends
    b"get /v1/kv/a",
])
def test_anything_unusual_goes_to_aiohttp(data: bytes) -> None:
    assert isinstance(parse_request(data, LIMIT), HandOver)


@pytest.mark.parametrize(("connection", "close"), [
    ("close", True), ("keep-alive, Close", True), ("x-close-y", False), ("keep-alive", False)])
def test_connection_close_is_a_token_of_the_header(connection: str, close: bool) -> None:
    data = f"GET /v1/kv/a HTTP/1.1\r\nHost: h\r\nConnection: {connection}\r\n\r\n".encode()
    parsed = parse_request(data, LIMIT)
    assert not isinstance(parsed, HandOver) and parsed is not None
    assert parsed[0].close is close


def test_answers_are_written_as_aiohttp_writes_them() -> None:
    got = encode_answer(kv.Answer(200, '"1.0.1"', b"abc", kv.OCTET_STREAM), close=True)
    head, body = got.split(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 200 OK" and body == b"abc"
    assert {b'ETag: "1.0.1"', b"Content-Type: application/octet-stream",
            b"Content-Length: 3", b"Connection: close"} <= set(lines)
    no_content = encode_answer(kv.Answer(204), close=False)
    assert no_content.startswith(b"HTTP/1.1 204 No Content\r\n")
    assert b"Content-Length" not in no_content and b"Content-Type" not in no_content
    not_modified = encode_answer(kv.Answer(304, '"1.0.1"'), close=False)
    assert not_modified.startswith(b"HTTP/1.1 304 Not Modified\r\nETag: \"1.0.1\"\r\n")
    assert b"Content-Length" not in not_modified and not_modified.endswith(b"\r\n\r\n")


@contextlib.asynccontextmanager
async def sweeping_server() -> AsyncIterator[tuple[FastPath, int]]:
    """A fast path with a 0.3 s keep-alive timeout, swept every 0.1 s, and its port. No
    request is answered, so the node is never asked anything: only its value limit is read."""
    node = cast(Node, SimpleNamespace(settings=SimpleNamespace(max_value_bytes=LIMIT)))

    def no_fallback() -> Any:
        raise AssertionError("nothing here is aiohttp's")

    fast_path = FastPath(node, no_fallback, keepalive_timeout=0.3, sweep_interval=0.1)
    server = await asyncio.get_running_loop().create_server(fast_path, "127.0.0.1", 0)
    sweeper = asyncio.create_task(fast_path.close_idle_connections())
    try:
        yield fast_path, server.sockets[0].getsockname()[1]
    finally:
        sweeper.cancel()
        server.close()


async def test_idle_connections_are_closed_and_shutdown_closes_the_rest() -> None:
    async with sweeping_server() as (fast_path, port):
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(idle_reader.read(), 5) == b""  # closed by the sweep
        idle_writer.close()

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /v1/kv/a HTTP/1.1\r\n")  # the head never completes
        await asyncio.sleep(0.05)
        await fast_path.shutdown(timeout=1.0)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


async def test_a_request_still_arriving_is_not_idle() -> None:
    """A slow upload takes longer than the keep-alive timeout (found by testing: the sweep
    cut it); the timeout counts from the last bytes received."""
    async with sweeping_server() as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for byte in b"GET /v1/kv/a HTTP/1.1\r\nHost: h\r\n":  # 1.6 s, 0.05 s per byte
            writer.write(bytes([byte]))
            await asyncio.sleep(0.05)
            assert not reader.at_eof()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # idle once the bytes stop
        writer.close()


class Response(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes


async def read_response(reader: asyncio.StreamReader) -> Response:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await asyncio.wait_for(reader.readexactly(length), 10) if length else b""
    return Response(status, headers, body)


async def connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


def put(key: str, value: bytes, *headers: str) -> bytes:
    extra = "".join(f"{h}\r\n" for h in headers)
    return (f"PUT /v1/kv/{key} HTTP/1.1\r\nHost: t\r\n{extra}Content-Length: {len(value)}"
            f"\r\n\r\n").encode() + value


def request(method: str, key: str, *headers: str) -> bytes:
    extra = "".join(f"{h}\r\n" for h in headers)
    return f"{method} /v1/kv/{key} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


def conversation(key: str) -> list[bytes]:
    """Every kind of answer the key API gives, in one keep-alive conversation."""
    return [
        request("GET", key),  # 404
        put(key, b"v1"),  # 201
        put(key, b"v2"),  # 200
        request("GET", key),  # 200 with the value
        request("GET", key, "If-None-Match: *"),  # 304: the client has it
        request("GET", key, 'If-None-Match: "0.0.0"'),  # 200: another version
        request("GET", key, 'If-Match: "0.0.0"'),  # 412
        request("GET", key, "If-Match: *"),  # 200
        put(key, b"v3", "If-None-Match: *"),  # 412
        put(key, b"v3", 'If-Match: "0.0.0"'),  # 412
        put(key, b"v3", "If-None-Match: x"),  # 400
        request("DELETE", key, 'If-Match: "0.0.0"'),  # 412
        request("DELETE", key),  # 204
        request("DELETE", key),  # 404
        request("GET", key, "If-Match: *"),  # 412: no value to match
        request("GET", key, "If-None-Match: *"),  # 404
        put(key, b""),  # 201: an empty value
        request("GET", key),  # 200, empty body
        request("GET", "%zz"),  # 400: bad key
        request("GET", "a/../b"),  # 404: dot segments are part of the key, not resolved
        request("GET", key, "Connection: close"),  # 200, then the server closes
    ]


def normalized(response: Response, key: str) -> tuple[int, dict[str, str], bytes]:
    """What must be the same on both paths: the version and key named differ."""
    headers = {name: re.sub(r'"\d+\.[^"]*"', "<etag>", value)
               for name, value in response.headers.items() if name not in ("date",)}
    body = re.sub(rb'\\"\d+\.[^"\\]*\\"', b"<etag>", response.body).replace(key.encode(), b"K")
    return response.status, headers, body


@pytest.mark.integration
async def test_key_requests_are_answered_as_aiohttp_answers_them(cluster: Replicas) -> None:
    url = cluster.urls["0"]
    answers = {}
    for path, key in (("fast", "fast-key"), ("aiohttp", "slow-key")):
        reader, writer = await connect(url)
        if path == "aiohttp":  # a connection that starts with another request is aiohttp's
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            assert (await read_response(reader)).status == 200
        got = []
        for message in conversation(key):
            writer.write(message)
            got.append(normalized(await read_response(reader), key))
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed after Connection: close
        writer.close()
        answers[path] = got
    assert [status for status, _, _ in answers["fast"]] == \
        [404, 201, 200, 200, 304, 200, 412, 200, 412, 412, 400, 412, 204, 404, 412, 404, 201,
         200, 400, 404, 200]
    assert answers["fast"] == answers["aiohttp"]


@pytest.mark.integration
async def test_pipelined_requests_are_answered_in_order(cluster: Replicas) -> None:
    reader, writer = await connect(cluster.urls["1"])
    writer.write(put("pipe", b"a") + put("pipe", b"bb") + request("GET", "pipe")
                 + put("pipe", b"c", "If-None-Match: *") + request("GET", "pipe"))
    answers = [await read_response(reader) for _ in range(5)]
    writer.close()
    assert [a.status for a in answers] == [201, 200, 200, 412, 200]
    assert answers[2].body == b"bb" and answers[4].body == b"bb"
    assert answers[2].headers["etag"] == answers[1].headers["etag"]


@pytest.mark.integration
async def test_a_connection_is_handed_to_aiohttp_at_the_first_unusual_request(
    cluster: Replicas,
) -> None:
    reader, writer = await connect(cluster.urls["2"])
    writer.write(put("mixed", b"lean"))
    assert (await read_response(reader)).status == 201
    # chunked: aiohttp's from here on, on the same connection
    writer.write(b"PUT /v1/kv/mixed HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n")
    assert (await read_response(reader)).status == 200
    writer.write(request("GET", "mixed"))
    assert (await read_response(reader)).body == b"abcdef"
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert (await read_response(reader)).status == 200
    writer.close()

    reader, writer = await connect(cluster.urls["2"])  # a client that waits for 100 Continue
    writer.write(b"PUT /v1/kv/mixed HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                 b"Content-Length: 2\r\n\r\n")
    assert (await read_response(reader)).status == 100
    writer.write(b"xy")
    assert (await read_response(reader)).status == 200
    writer.write(b"GET /v1/kv/mixed HTTP/1.0\r\n\r\n")
    assert (await read_response(reader)).body == b"xy"
    writer.close()

    reader, writer = await connect(cluster.urls["2"])  # an expectation we do not know
    writer.write(b"PUT /v1/kv/mixed HTTP/1.1\r\nHost: t\r\nExpect: foo\r\n"
                 b"Content-Length: 2\r\n\r\n")
    refused = await read_response(reader)
    assert refused.status == 417 and orjson.loads(refused.body)["error"] == "expectation_failed"
    writer.close()

    reader, writer = await connect(cluster.urls["2"])  # TLS to the plain port: answered
    writer.write(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    refused = await read_response(reader)
    assert refused.status == 400 and b"HTTPS" in refused.body
    writer.close()

    reader, writer = await connect(cluster.urls["2"])  # a value too large: refused at once
    writer.write(b"PUT /v1/kv/mixed HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                 b"Content-Length: 2000000\r\n\r\n")
    refused = await read_response(reader)
    assert refused.status == 413 and b"value_too_large" in refused.body
    # the client may send the body after all, or its next request: it must open a new
    # connection (aiohttp discards the body's bytes for up to 10 s, then closes this one)
    assert refused.headers["connection"] == "close"
    writer.close()

    reader, writer = await connect(cluster.urls["2"])  # malformed: aiohttp's 400, in JSON
    writer.write(request("GET", "mixed") + b"GET /v1/kv/mixed HTTP/1.1\r\nBad Header\r\n\r\n")
    assert (await read_response(reader)).status == 200
    malformed = await read_response(reader)
    assert malformed.status == 400 and malformed.headers["content-type"] == "application/json"
    assert orjson.loads(malformed.body) == {"error": "bad_request",
                                            "detail": "Invalid header token: b'Bad Header'"}
    assert await asyncio.wait_for(reader.read(), 5) == b""  # and the connection is closed
    writer.close()


@pytest.mark.integration
async def test_a_half_closed_connection_still_gets_its_answer(cluster: Replicas) -> None:
    reader, writer = await connect(cluster.urls["0"])
    writer.write(put("half", b"v"))
    writer.write_eof()
    assert (await read_response(reader)).status == 201
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


@pytest.mark.integration
async def test_bodies_aiohttp_would_store_otherwise_are_refused(cluster: Replicas) -> None:
    """Found by adversarial testing: each was stored as sent, or answered 500, on either
    path (the first request of a connection, or after a lean one)."""
    odd = [
        (b"Transfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 501),
        (b"Content-Range: bytes 0-2/9\r\nContent-Length: 3\r\n\r\nabc", 400),
        (b"Content-Length: " + b"0" * 4400 + b"3\r\n\r\nabc", 400),
        (b"Host: u\r\nContent-Length: 3\r\n\r\nabc", 400),  # a second Host
    ]
    for headers, status in odd:
        for first in (b"", request("GET", "odd")):
            reader, writer = await connect(cluster.urls["0"])
            writer.write(first + b"PUT /v1/kv/odd HTTP/1.1\r\nHost: t\r\n" + headers)
            if first:
                assert (await read_response(reader)).status == 404
            refused = await read_response(reader)
            assert refused.status == status, (headers[:40], refused)
            assert refused.headers["content-type"] == "application/json"
            writer.close()
    reader, writer = await connect(cluster.urls["0"])
    writer.write(b"PUT /v1/kv/odd HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")  # no Host
    assert (await read_response(reader)).status == 400
    writer.write(request("GET", "odd"))
    writer.close()
    reader, writer = await connect(cluster.urls["1"])
    writer.write(request("GET", "odd"))
    assert (await read_response(reader)).status == 404  # none of them stored anything
    writer.close()


def resident_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


@pytest.mark.integration
async def test_a_client_that_does_not_read_its_answers_costs_no_memory(
    cluster: Replicas,
) -> None:
    """Found by adversarial testing: 400 pipelined GETs of a 1 MiB value, never read, held
    393 MiB in the replica. Requests are answered only as fast as the client reads."""
    async with Client(cluster.urls["0"]) as client:
        await client.put("big", b"v" * (1 << 20))
    pid = cluster.procs["0"].pid
    sock = socket.create_connection(("127.0.0.1", int(cluster.urls["0"].rsplit(":", 1)[1])))
    before = resident_mib(pid)
    sock.sendall(request("GET", "big") * 100)
    await asyncio.sleep(2)
    assert resident_mib(pid) - before < 30
    reader, writer = await asyncio.open_connection(sock=sock)
    for _ in range(100):  # and every answer comes once the client reads
        answer = await read_response(reader)
        assert answer.status == 200 and len(answer.body) == 1 << 20
    writer.close()
