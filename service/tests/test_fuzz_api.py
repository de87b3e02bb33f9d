"""Fuzz the client API of real replicas against its OpenAPI document, plus malformed requests.

Three `quorumkv serve` processes on 127.0.0.1 (free ports, temporary data directories) get
schemathesis-generated requests for every operation of `quorumkv/http/openapi.yaml`, spread
over the replicas, positive and negative data. Each response must be no 5xx other than 503 and
conform to the document (status code, content type, headers, body schema). Then come the
requests fuzzers do not make: broken percent-escapes, over-long, empty and non-UTF-8 keys,
over-large values (with and without Content-Length), garbage preconditions, huge headers,
broken framing; each gets its 4xx and changes nothing. At the end every replica must still be
alive, answer /healthz and serve a put/get round trip, with a sentinel key unchanged.

Budget: about 15-40 s. `QUORUMKV_FUZZ_EXAMPLES` (default 80): fuzzing examples per operation.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import quorumkv.http
import schemathesis
from hypothesis import HealthCheck, settings
from replicas import Replicas
from schemathesis import GenerationMode
from schemathesis.specs.openapi import checks as oas_checks

pytestmark = pytest.mark.integration

OPENAPI = Path(quorumkv.http.__file__).with_name("openapi.yaml")
MAX_EXAMPLES = int(os.environ.get("QUORUMKV_FUZZ_EXAMPLES", "80"))
MIB = 1024 * 1024
SENTINEL_KEY = "fuzz-sentinel/ü"  # a slash and non-ASCII: percent-encoded in the path
SENTINEL_VALUE = b"\x00sentinel\xff" * 10

schema = schemathesis.openapi.from_path(OPENAPI)
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                                max_examples=MAX_EXAMPLES)
schema.config.phases.update(phases=["examples", "coverage", "fuzzing"])


class Fuzzed:
    """The replicas under fuzz and the sentinel key that nothing may change."""

    def __init__(self, replicas: Replicas) -> None:
        self.replicas = replicas
        self._next = itertools.cycle(sorted(replicas.urls))
        self._lock = threading.Lock()
        self.sentinel_etag = ""

    def next_url(self) -> str:
        with self._lock:
            return self.replicas.urls[next(self._next)]

    def port(self, node: str = "0") -> int:
        return int(self.replicas.urls[node].rsplit(":", 1)[1])

    def assert_healthy(self) -> None:
        for node, proc in self.replicas.procs.items():
            assert proc.poll() is None, f"replica {node} died: {self.replicas.log(node)[-3000:]}"
            assert self.replicas.status(node, "/healthz") == 200, f"replica {node} not alive"

    def assert_sentinel_unchanged(self) -> None:
        for node in self.replicas.urls:
            status, headers, body = settled(self.port(node), "GET", key_path(SENTINEL_KEY))
            assert status == 200, (node, status, body)
            assert body == SENTINEL_VALUE, f"sentinel value changed on replica {node}"
            assert headers.get("etag") == self.sentinel_etag, f"sentinel version changed ({node})"


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    replicas = Replicas(tmp_path_factory.mktemp("fuzz"), 3)
    try:
        replicas.start_all()
        f = Fuzzed(replicas)
        status, headers, body = settled(f.port("0"), "PUT", key_path(SENTINEL_KEY),
                                        SENTINEL_VALUE)
        assert status in (200, 201), (status, body)
        status, headers, body = settled(f.port("0"), "GET", key_path(SENTINEL_KEY))
        assert (status, body) == (200, SENTINEL_VALUE), (status, body)
        f.sentinel_etag = headers["etag"]
        yield f
    finally:
        replicas.stop_all()


# ----------------------------------------------------------------------------- HTTP helpers
def key_path(key: str) -> str:
    return "/v1/kv/" + urllib.parse.quote(key.encode(), safe="")


def request(port: int, method: str, path: str, body: bytes = b"",
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        if body or method in ("PUT", "POST"):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def settled(port: int, method: str, path: str, body: bytes = b"",
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """`request`, retried while the answer is 503 (no quorum in time: a loaded machine);
    only for idempotent set-up and verification steps, never for what a test asserts on."""
    deadline = time.monotonic() + 20
    while True:
        status, hdrs, data = request(port, method, path, body, headers)
        if status != 503 or time.monotonic() > deadline:
            return status, hdrs, data
        time.sleep(0.2)


def raw_exchange(port: int, head: bytes, body: bytes | list[bytes] = b"",
                 ) -> tuple[int | None, dict[str, str], bytes]:
    """Send exactly these bytes; read the response while still sending (the server may answer
    and close early, e.g. 413 before the body). Status None: closed without an answer."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)

    def send() -> None:
        try:
            sock.sendall(head)
            for chunk in ([body] if isinstance(body, bytes) else body):
                sock.sendall(chunk)
        except OSError:
            pass  # the server answered and closed; what it answered is what we check

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        resp = http.client.HTTPResponse(sock)
        try:
            resp.begin()
            data = resp.read()
        except (http.client.HTTPException, ConnectionError):
            return None, {}, b""
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        sender.join(15)
        sock.close()


def head(method: str, target: bytes, *headers: bytes) -> bytes:
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1",
             *headers, b"", b""]
    return b"\r\n".join(lines)


def assert_json_error(status: int | None, body: bytes, expected: int) -> dict[str, Any]:
    assert status == expected, (status, body[:300])
    doc = json.loads(body)
    assert isinstance(doc.get("error"), str) and isinstance(doc.get("detail"), str), doc
    return doc


# ------------------------------------------------------------------------- schemathesis fuzz
def not_a_server_error_but_503(ctx: Any, response: Any, case: Any) -> None:
    """5xx is a bug, except 503: no quorum in time (the documented, retryable answer)."""
    if response.status_code >= 500 and response.status_code != 503:
        raise AssertionError(f"server error {response.status_code}: {response.text[:300]}")


CHECKS = [
    not_a_server_error_but_503,
    oas_checks.status_code_conformance,
    oas_checks.content_type_conformance,
    oas_checks.response_headers_conformance,
    oas_checks.response_schema_conformance,
    oas_checks.negative_data_rejection,
]


@schema.parametrize()
@settings(deadline=None, max_examples=MAX_EXAMPLES, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_api_conforms_to_openapi(case: Any, fuzzed: Fuzzed) -> None:
    if case.path_parameters and case.path_parameters.get("key") in (".", ".."):
        return  # not a key a client can send: the URL itself would be normalised
    case.call_and_validate(base_url=fuzzed.next_url(), checks=CHECKS, timeout=15)


# ----------------------------------------------------------------- malformed, by hand
BAD_KEY_PATHS = [
    ("invalid percent-escape", b"/v1/kv/abc%zz"),
    ("truncated percent-escape", b"/v1/kv/abc%4"),
    ("lone percent", b"/v1/kv/%"),
    ("key of 1025 bytes", b"/v1/kv/" + b"k" * 1025),
    ("key of 1026 UTF-8 bytes", b"/v1/kv/" + b"%C3%A9" * 513),
    ("empty key", b"/v1/kv/"),
    ("non-UTF-8 key", b"/v1/kv/%FF%FE"),
    ("overlong UTF-8 encoding", b"/v1/kv/%C0%AF"),
    ("UTF-16 surrogate", b"/v1/kv/%ED%A0%80"),
]


@pytest.mark.parametrize("method", ["PUT", "GET", "DELETE"])
@pytest.mark.parametrize(("what", "target"), BAD_KEY_PATHS, ids=[w for w, _ in BAD_KEY_PATHS])
def test_malformed_key_is_400(fuzzed: Fuzzed, method: str, what: str, target: bytes) -> None:
    body = b"value"
    hdr = head(method, target, b"Content-Length: %d" % len(body)) if method == "PUT" \
        else head(method, target)
    status, _, data = raw_exchange(fuzzed.port("1"), hdr, body if method == "PUT" else b"")
    assert_json_error(status, data, 400)
    # nothing was stored under the prefix a lenient decoder could have produced
    if method == "PUT" and what.startswith("key of"):
        assert settled(fuzzed.port("2"), "GET", "/v1/kv/" + "k" * 1024)[0] == 404


def test_raw_non_utf8_bytes_in_path_are_4xx(fuzzed: Fuzzed) -> None:
    status, _, _ = raw_exchange(fuzzed.port("0"), head("PUT", b"/v1/kv/\xff\xfe\x80",
                                                       b"Content-Length: 1"), b"x")
    assert status is not None and 400 <= status < 500, status


def test_key_of_exactly_1024_bytes_is_accepted(fuzzed: Fuzzed) -> None:
    path = key_path("é" * 512)  # 1024 bytes of UTF-8
    assert settled(fuzzed.port("0"), "PUT", path, b"v")[0] == 201
    assert settled(fuzzed.port("1"), "GET", path)[2] == b"v"
    assert settled(fuzzed.port("2"), "DELETE", path)[0] == 204


def test_value_over_1mib_with_content_length_is_413(fuzzed: Fuzzed) -> None:
    body = b"x" * (MIB + 1)
    status, _, data = raw_exchange(
        fuzzed.port("0"), head("PUT", b"/v1/kv/fuzz-big-cl", b"Content-Length: %d" % len(body)),
        body)
    assert_json_error(status, data, 413)
    assert settled(fuzzed.port("1"), "GET", "/v1/kv/fuzz-big-cl")[0] == 404


def test_value_over_1mib_chunked_is_413(fuzzed: Fuzzed) -> None:
    """No Content-Length: the limit must hold on the bytes actually received."""
    chunks = [b"%x\r\n%s\r\n" % (64 * 1024, b"y" * 64 * 1024) for _ in range(16)]
    chunks += [b"1\r\nz\r\n", b"0\r\n\r\n"]  # 1 MiB + 1 byte in all
    status, _, data = raw_exchange(
        fuzzed.port("1"), head("PUT", b"/v1/kv/fuzz-big-chunked", b"Transfer-Encoding: chunked"),
        chunks)
    assert_json_error(status, data, 413)
    assert settled(fuzzed.port("2"), "GET", "/v1/kv/fuzz-big-chunked")[0] == 404


def test_value_far_over_the_limit_is_413(fuzzed: Fuzzed) -> None:
    chunk = b"%x\r\n%s\r\n" % (MIB, b"z" * MIB)
    status, _, data = raw_exchange(
        fuzzed.port("2"), head("PUT", b"/v1/kv/fuzz-huge", b"Transfer-Encoding: chunked"),
        [chunk] * 6 + [b"0\r\n\r\n"])
    assert_json_error(status, data, 413)
    assert settled(fuzzed.port("0"), "GET", "/v1/kv/fuzz-huge")[0] == 404


def test_value_of_exactly_1mib_is_accepted(fuzzed: Fuzzed) -> None:
    body = bytes(range(256)) * (MIB // 256)
    assert settled(fuzzed.port("2"), "PUT", "/v1/kv/fuzz-1mib", body)[0] == 201
    assert settled(fuzzed.port("0"), "GET", "/v1/kv/fuzz-1mib")[2] == body
    assert settled(fuzzed.port("1"), "DELETE", "/v1/kv/fuzz-1mib")[0] == 204


GARBAGE_IF_MATCH = ["garbage", '"no-such-version"', "W/{etag}", '""', '"unterminated',
                    "{etag}x", ", ,", "é-latin1"]


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
@pytest.mark.parametrize("if_match", GARBAGE_IF_MATCH)
def test_garbage_if_match_is_412_and_changes_nothing(fuzzed: Fuzzed, method: str,
                                                     if_match: str) -> None:
    value = if_match.replace("{etag}", fuzzed.sentinel_etag)
    hdrs = [b"If-Match: " + value.encode("latin-1")]
    body = b"overwritten!" if method == "PUT" else b""
    if method == "PUT":
        hdrs.append(b"Content-Length: %d" % len(body))
    status, _, data = raw_exchange(fuzzed.port("1"),
                                   head(method, key_path(SENTINEL_KEY).encode(), *hdrs), body)
    assert_json_error(status, data, 412)
    fuzzed.assert_sentinel_unchanged()


@pytest.mark.parametrize(("what", "method", "headers"), [
    ("If-None-Match other than *", "PUT", [b'If-None-Match: "abc"']),
    ("If-Match with If-None-Match", "PUT", [b"If-Match: *", b"If-None-Match: *"]),
    ("If-None-Match on DELETE", "DELETE", [b"If-None-Match: *"]),
    ("If-None-Match of its version on DELETE", "DELETE", [b"If-None-Match: {etag}"]),
])
def test_bad_precondition_combinations_are_400(fuzzed: Fuzzed, what: str, method: str,
                                               headers: list[bytes]) -> None:
    """A precondition the API cannot honour is refused, never dropped: a DELETE that
    ignored it would delete what the client made sure it would not."""
    headers = [h.replace(b"{etag}", fuzzed.sentinel_etag.encode()) for h in headers]
    body = b"new" if method == "PUT" else b""
    status, _, data = raw_exchange(
        fuzzed.port("2"), head(method, key_path(SENTINEL_KEY).encode(), *headers,
                               b"Content-Length: %d" % len(body)), body)
    assert_json_error(status, data, 400)
    fuzzed.assert_sentinel_unchanged()


def test_repeated_if_match_lines_are_one_list(fuzzed: Fuzzed) -> None:
    path = key_path("fuzz-two-if-match")
    assert settled(fuzzed.port("0"), "PUT", path, b"v1")[0] in (200, 201)
    etag = settled(fuzzed.port("0"), "GET", path)[1]["etag"]
    for port in (fuzzed.port("1"), fuzzed.port("2")):
        status, headers, _ = raw_exchange(port, head(
            "PUT", path.encode(), b'If-Match: "other"', b"If-Match: " + etag.encode(),
            b"Content-Length: 2"), b"v2")
        assert status == 200, status
        etag = headers["etag"]


@pytest.mark.parametrize(("what", "framing", "body"), [
    ("gzip, Content-Length (the lean path)", [b"Content-Length: 20"], b"\x1f\x8b" + b"x" * 18),
    ("gzip, chunked (aiohttp)", [b"Transfer-Encoding: chunked"], b"14\r\n" + b"y" * 20
     + b"\r\n0\r\n\r\n"),
])
def test_an_encoded_body_is_415_and_changes_nothing(fuzzed: Fuzzed, what: str,
                                                    framing: list[bytes], body: bytes) -> None:
    """A value is the body as sent: an encoded one is refused on both front ends, rather
    than stored inflated by one and as sent by the other (or a 500 for a broken gzip)."""
    status, _, data = raw_exchange(fuzzed.port("1"), head(
        "PUT", key_path(SENTINEL_KEY).encode(), b"Content-Encoding: gzip", *framing), body)
    assert_json_error(status, data, 415)
    fuzzed.assert_sentinel_unchanged()


def test_an_absolute_form_target_names_the_key_of_its_path(fuzzed: Fuzzed) -> None:
    """Proxies send `PUT http://host/v1/kv/k`: that is key `k`, not `host/v1/kv/k`."""
    target = b"http://127.0.0.1:%d/v1/kv/fuzz-absolute%%2Fform" % fuzzed.port("0")
    status, _, _ = raw_exchange(fuzzed.port("0"), head("PUT", target, b"Content-Length: 3"),
                                b"abs")
    assert status == 201, status
    assert settled(fuzzed.port("1"), "GET", key_path("fuzz-absolute/form"))[2] == b"abs"
    status, _, body = raw_exchange(fuzzed.port("2"), head("GET", target))
    assert (status, body) == (200, b"abs")


@pytest.mark.parametrize(("what", "request_head"), [
    ("64 KiB header value", head("PUT", key_path(SENTINEL_KEY).encode(),
                                 b"X-Big: " + b"a" * 65536, b"Content-Length: 1")),
    ("64 KiB header name", head("PUT", key_path(SENTINEL_KEY).encode(),
                                b"X-" + b"n" * 65536 + b": v", b"Content-Length: 1")),
    ("64 KiB If-Match", head("PUT", key_path(SENTINEL_KEY).encode(),
                             b"If-Match: " + b'"x",' * 16384, b"Content-Length: 1")),
    ("64 KiB request target", head("GET", b"/v1/kv/" + b"%41" * 21846)),
    ("header without colon", head("PUT", key_path(SENTINEL_KEY).encode(), b"NoColonHere",
                                  b"Content-Length: 1")),
    ("control byte in header", head("PUT", key_path(SENTINEL_KEY).encode(), b"X-A: a\x00b",
                                    b"Content-Length: 1")),
    ("non-numeric Content-Length", head("PUT", key_path(SENTINEL_KEY).encode(),
                                        b"Content-Length: abc")),
    ("negative Content-Length", head("PUT", key_path(SENTINEL_KEY).encode(),
                                     b"Content-Length: -1")),
    ("Content-Length with Transfer-Encoding", head(
        "PUT", key_path(SENTINEL_KEY).encode(), b"Content-Length: 1",
        b"Transfer-Encoding: chunked")),
    ("bad chunk size", head("PUT", key_path(SENTINEL_KEY).encode(),
                            b"Transfer-Encoding: chunked") + b"zz\r\nx\r\n0\r\n\r\n"),
])
def test_broken_framing_and_huge_headers_are_4xx(fuzzed: Fuzzed, what: str,
                                                 request_head: bytes) -> None:
    status, _, _ = raw_exchange(fuzzed.port("0"), request_head, b"x")
    assert status is not None and 400 <= status < 500, (what, status)
    fuzzed.assert_sentinel_unchanged()


# ------------------------------------------------------------------------------ aftermath
def test_replicas_survive_and_serve_after_the_fuzz(fuzzed: Fuzzed) -> None:
    """Runs last (file order): nobody crashed, nothing got corrupted, all still serve."""
    fuzzed.assert_healthy()
    fuzzed.replicas.wait_ready(sorted(fuzzed.replicas.urls), timeout=10)
    fuzzed.assert_sentinel_unchanged()
    for node in sorted(fuzzed.replicas.urls):
        path = key_path(f"after-fuzz-{node}")
        value = f"round trip through {node}".encode()
        assert settled(fuzzed.port(node), "PUT", path, value)[0] in (200, 201)
        for other in fuzzed.replicas.urls:
            status, _, body = settled(fuzzed.port(other), "GET", path)
            assert (status, body) == (200, value), (node, other, status, body)
    for node in fuzzed.replicas.urls:
        log = fuzzed.replicas.log(node)
        assert "unexpected error" not in log, log[-3000:]
