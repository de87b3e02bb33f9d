"""An asyncio client of the QuorumKV HTTP API (the one users, the CLI and the operator use).

It speaks only the public client API of SPEC.md, never the `/internal/` peer protocol, so it
is the boundary the operator and the tests go through.
"""

from __future__ import annotations

import dataclasses
import math
import time
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from yarl import URL

from quorumkv.placement import home_order


class QuorumKVError(Exception):
    """A request that the service refused or could not serve; carries the HTTP status."""

    def __init__(self, status: int, error: str, detail: str = "") -> None:
        super().__init__(f"{status} {error}" + (f": {detail}" if detail else ""))
        self.status = status
        self.error = error
        self.detail = detail


class PreconditionFailed(QuorumKVError):
    """`412`: the If-Match / If-None-Match precondition did not hold; nothing changed."""


class Unavailable(QuorumKVError):
    """`503`: no quorum in time. A write may or may not have taken effect."""

    def __init__(self, status: int, error: str, detail: str = "", retry_after: float = 1.0):
        super().__init__(status, error, detail)
        self.retry_after = retry_after


@dataclasses.dataclass(frozen=True)
class PutResult:
    created: bool
    etag: str


@dataclasses.dataclass(frozen=True)
class GetResult:
    value: bytes
    etag: str


@dataclasses.dataclass(frozen=True)
class NotModified:
    """`304` to a read with `If-None-Match`: the key is still at `etag`, a version the caller
    named, so no value came back."""

    etag: str


MEMBERSHIP_PATH = "/internal/v1/membership"
ROUTES_TTL = 10.0  # seconds a cluster view routes writes before it is asked for again
DOWN_FOR = 5.0  # seconds a replica that failed a request is not routed to


def new_session(**options: Any) -> aiohttp.ClientSession:
    """A session (`options` as for `aiohttp.ClientSession`) that never resends a request by
    itself.

    aiohttp resends PUT and DELETE once when a kept-alive connection breaks (RFC 9112 lets
    it for idempotent methods), but the first one may have been applied: a resent write can
    land after someone else's, and a compare-and-set that succeeded can come back 412. There
    is no public switch, so this sets the private one. Sessions passed in by the caller are
    the caller's to configure. Replicas use it too: they relay key requests.
    """
    session = aiohttp.ClientSession(**options)
    session._retry_connection = False
    return session


def key_url(base: str, key: str) -> URL:
    """The URL of a key under `base`: percent-encoded UTF-8, `/` included, taken as encoded
    so that no URL library resolves the keys `.` and `..` as dot segments."""
    encoded = quote(key, safe="")
    if encoded in (".", ".."):
        encoded = encoded.replace(".", "%2E")
    return URL(base + "/v1/kv/" + encoded, encoded=True)


class Client:
    """One endpoint (any replica or the client Service). Reuses connections (keep-alive)."""

    def __init__(
        self,
        endpoint: str,
        *,
        timeout: float = 10.0,
        session: aiohttp.ClientSession | None = None,
        token: str | None = None,
        route_writes: bool = False,
    ) -> None:
        """`token` is the cluster's peer secret, needed only for the membership admin API.

        `route_writes`: send writes (PUT, DELETE) straight to the home replica, found by the
        replicas' own rule (`quorumkv.placement`) in the members that `endpoint`'s cluster view
        lists (asked again every ROUTES_TTL seconds). The home proposes every change: any
        other replica forwards a write there, so this saves the cluster a hop per write.
        Reads go to `endpoint`: any replica serves them in one round trip. It needs the
        members' URLs to be reachable from the client (e.g. inside the Kubernetes cluster).
        A replica that fails a write is skipped for DOWN_FOR seconds (the next in the home
        order takes its place, as it does for the replicas), and the write goes to
        `endpoint` instead if it certainly never reached the replica (no connection); a
        write that may have reached it is never sent again.
        """
        self.endpoint = endpoint.rstrip("/")
        self._route_writes = route_writes
        self._routes: dict[str, str] = {}  # member id -> URL
        self._routes_at = -math.inf
        self._down_until: dict[str, float] = {}  # URL -> monotonic time
        self._admin_headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session = session
        self._owns_session = session is None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = new_session(timeout=self._timeout)
        return self._session

    async def put(
        self, key: str, value: bytes, *, if_match: str | None = None, create_only: bool = False
    ) -> PutResult:
        headers = {}
        if if_match is not None:
            headers["If-Match"] = if_match
        if create_only:
            headers["If-None-Match"] = "*"
        async with await self._send("PUT", key, data=value, headers=headers) as resp:
            if resp.status in (200, 201):
                return PutResult(created=resp.status == 201, etag=_etag(resp))
            raise await _error(resp)

    async def get(self, key: str, *, if_match: str | None = None) -> GetResult | None:
        """Read a key (linearizable); None when it is absent. With `if_match`, only while it
        is at that version: `PreconditionFailed` otherwise (absent included)."""
        headers = {"If-Match": if_match} if if_match is not None else {}
        found = await self._get(key, headers)
        if isinstance(found, NotModified):  # a 304 answers only If-None-Match
            raise QuorumKVError(304, "not_modified", "a read that named no version was "
                                "answered 304: is the endpoint a QuorumKV replica?")
        return found

    async def get_if_changed(self, key: str, etag: str) -> GetResult | NotModified | None:
        """Read a key unless it is still at version `etag` (`If-None-Match`): a client that
        holds a value refreshes it without fetching it again while it has not changed."""
        return await self._get(key, {"If-None-Match": etag})

    async def _get(self, key: str,
                   headers: dict[str, str]) -> GetResult | NotModified | None:
        async with await self._send("GET", key, headers=headers) as resp:
            if resp.status == 200:
                return GetResult(value=await resp.read(), etag=_etag(resp))
            if resp.status == 304:
                return NotModified(etag=_etag(resp))
            error = await _error(resp)
            if _absent(error):
                return None
            raise error

    async def delete(self, key: str, *, if_match: str | None = None) -> bool:
        """Delete a key; False when it was absent."""
        headers = {"If-Match": if_match} if if_match is not None else {}
        async with await self._send("DELETE", key, headers=headers) as resp:
            if resp.status == 204:
                return True
            error = await _error(resp)
            if _absent(error):
                return False
            raise error

    async def _send(self, method: str, key: str, **kwargs: Any) -> aiohttp.ClientResponse:
        """Send a key request: a write to the home (with `route_writes`), else to the
        endpoint."""
        url = await self._home() if method != "GET" else self.endpoint
        try:
            return await self._http().request(method, key_url(url, key), **kwargs)
        except (aiohttp.ClientError, TimeoutError) as exc:
            if url == self.endpoint:
                raise
            self._down_until[url] = time.monotonic() + DOWN_FOR
            if not isinstance(exc, aiohttp.ClientConnectorError):
                raise  # a write that may have been applied: never resent
        return await self._http().request(method, key_url(self.endpoint, key), **kwargs)

    async def _home(self) -> str:
        """The base URL for writes: the home's while routing writes, else the endpoint."""
        if not self._route_writes:
            return self.endpoint
        now = time.monotonic()
        if now - self._routes_at > ROUTES_TTL:
            self._routes_at = now
            try:
                view = await self.cluster()
                self._routes = {str(m["id"]): str(m["url"]).rstrip("/") for m in view["members"]}
            except (QuorumKVError, aiohttp.ClientError, TimeoutError, KeyError, TypeError):
                self._routes = {}  # the endpoint takes every write until the next try
        for node in home_order(self._routes):
            url = self._routes[node]
            if self._down_until.get(url, 0.0) <= now:
                return url
        return self.endpoint

    async def cluster(self) -> dict[str, Any]:
        """This replica's view of the cluster (`GET /v1/cluster`)."""
        async with self._http().get(self.endpoint + "/v1/cluster") as resp:
            if resp.status == 200:
                body: dict[str, Any] = orjson.loads(await resp.read())
                return body
            raise await _error(resp)

    async def membership(self) -> dict[str, Any]:
        """The configuration and the membership change under way or last made (admin API)."""
        async with self._http().get(self.endpoint + MEMBERSHIP_PATH,
                                    headers=self._admin_headers) as resp:
            if resp.status == 200:
                body: dict[str, Any] = orjson.loads(await resp.read())
                return body
            raise await _error(resp)

    async def change_membership(self, members: dict[str, str]) -> dict[str, Any]:
        """Start (or resume, or confirm) the change to member set `members` (id -> URL).

        Ask a replica that stays a member. Returns the same view as `membership()`; poll it
        until `change.state` is `done` (or `failed`: then ask again).
        """
        async with self._http().post(self.endpoint + MEMBERSHIP_PATH,
                                     data=orjson.dumps({"members": members}),
                                     headers={**self._admin_headers,
                                              "Content-Type": "application/json"}) as resp:
            if resp.status in (200, 202):
                body: dict[str, Any] = orjson.loads(await resp.read())
                return body
            raise await _error(resp)

    async def ready(self) -> bool:
        async with self._http().get(self.endpoint + "/readyz") as resp:
            return resp.status == 200


def _etag(resp: aiohttp.ClientResponse) -> str:
    etag = resp.headers.get("ETag")
    if etag is None:
        raise QuorumKVError(resp.status, "no_etag", f"{resp.url} answered without an ETag: "
                            "is the endpoint a QuorumKV replica?")
    return etag


def _absent(error: QuorumKVError) -> bool:
    """A replica's 404 for an absent key, not one for a path it has no route for (an
    endpoint URL with a wrong path prefix must not make every key look absent)."""
    return error.status == 404 and error.error == "not_found"


async def _error(resp: aiohttp.ClientResponse) -> QuorumKVError:
    raw = await resp.read()
    try:
        body = orjson.loads(raw)
        error, detail = str(body.get("error", "")), str(body.get("detail", ""))
    except (orjson.JSONDecodeError, AttributeError):
        error, detail = resp.reason or "error", raw[:200].decode("utf-8", "replace")
    if resp.status == 412:
        return PreconditionFailed(resp.status, error, detail)
    if resp.status == 503:
        retry_after = float(resp.headers.get("Retry-After", "1") or 1)
        return Unavailable(resp.status, error, detail, retry_after)
    return QuorumKVError(resp.status, error, detail)
