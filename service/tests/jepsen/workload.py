"""Concurrent clients issuing random single-key operations and recording what they observed.

Every written value is unique (`<client>.<n>`), so a value identifies its write: that is what
lets the model treat CAS as "current value == the value whose ETag we sent". A CAS is done
the way users do it: GET (recorded as a read), then PUT If-Match with that ETag.

Keys are worked in small groups, Jepsen's "independent keys": the clients are split into
groups of at most `clients_per_key`, each group works one key and moves to a fresh key after
`ops_per_key` operations. That bounds each key's sub-history, which is what keeps the
linearizability search cheap, while every key still sees real contention.

Classifying responses (the part that decides what the checker may assume):
- a connection that could not be opened: the request was never sent — not recorded;
- 2xx and the documented 404 / 412: definite (ok / fail);
- 503, a timeout, a connection cut mid-request, or anything unexpected: indeterminate (info).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections import Counter
from collections.abc import Sequence

import aiohttp

from .history import Kind, Op, Outcome

KEY_PATH = "/v1/kv/"


@dataclasses.dataclass
class Recorder:
    """Appends ops in completion order, numbering them."""

    ops: list[Op] = dataclasses.field(default_factory=list)
    unsent: Counter[str] = dataclasses.field(default_factory=Counter)
    unexpected: Counter[str] = dataclasses.field(default_factory=Counter)

    def add(self, **fields: object) -> Op:
        op = Op(index=len(self.ops), **fields)  # type: ignore[arg-type]
        self.ops.append(op)
        return op


@dataclasses.dataclass
class KeyGroup:
    """Clients sharing one key at a time; they move on together to a fresh key."""

    prefix: str
    ops_per_key: int
    generation: int = 0
    done: int = 0

    @property
    def key(self) -> str:
        return f"{self.prefix}-{self.generation}"

    def count(self) -> None:
        self.done += 1
        if self.done >= self.ops_per_key:
            self.done = 0
            self.generation += 1


@dataclasses.dataclass(frozen=True)
class Mix:
    """Relative weights of the operations a client picks."""

    read: float = 0.35
    write: float = 0.2
    cas: float = 0.25
    create: float = 0.1
    delete: float = 0.1


class Client:
    """One logical client: a keep-alive session, sequential ops, each against a random node."""

    def __init__(
        self,
        cid: int,
        urls: dict[str, str],
        group: KeyGroup,
        recorder: Recorder,
        rng: random.Random,
        timeout: float,
        mix: Mix,
    ) -> None:
        self.cid = cid
        self.urls = urls
        self.group = group
        self.rec = recorder
        self.rng = rng
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.mix = mix
        self.seq = 0
        self.session: aiohttp.ClientSession | None = None

    def _value(self) -> str:
        self.seq += 1
        return f"{self.cid}.{self.seq}"

    async def _request(
        self, method: str, node: str, key: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int | None, bytes, str | None, str]:
        """(status or None when indeterminate, body, etag, detail). Raises `_Unsent`."""
        assert self.session is not None
        url = self.urls[node] + KEY_PATH + key
        try:
            async with self.session.request(
                method, url, data=body, headers=headers, timeout=self.timeout
            ) as resp:
                data = await resp.read()
                detail = str(resp.status)
                if resp.status >= 500:  # say why: it is what a server bug report needs
                    detail += " " + data[:120].decode(errors="replace")
                return resp.status, data, resp.headers.get("ETag"), detail
        except aiohttp.ClientConnectorError as exc:
            raise _Unsent(type(exc).__name__) from exc
        except TimeoutError:
            return None, b"", None, "timeout"
        except aiohttp.ClientError as exc:
            return None, b"", None, type(exc).__name__

    async def read(self, node: str, key: str) -> Op:
        t0 = time.monotonic_ns()
        status, data, etag, detail = await self._request("GET", node, key, None, {})
        t1 = time.monotonic_ns()
        common = dict(process=self.cid, key=key, kind=Kind.READ, invoke_ns=t0, node=node)
        if status == 200:
            return self.rec.add(
                **common,
                outcome=Outcome.OK,
                complete_ns=t1,
                value=data.decode(),
                etag=etag,
                detail=detail,
            )
        if status == 404:
            return self.rec.add(
                **common, outcome=Outcome.OK, complete_ns=t1, value=None, detail=detail
            )
        self._unexpected(status, "read")
        return self.rec.add(
            **common, outcome=Outcome.INFO, complete_ns=None, gave_up_ns=t1, detail=detail
        )

    async def mutate(
        self,
        kind: Kind,
        node: str,
        key: str,
        *,
        expected: str | None = None,
        etag: str | None = None,
    ) -> Op:
        value = None if kind is Kind.DELETE else self._value()
        headers: dict[str, str] = {}
        if kind is Kind.CAS:
            assert etag is not None
            headers["If-Match"] = etag
        elif kind is Kind.CREATE:
            headers["If-None-Match"] = "*"
        method = "DELETE" if kind is Kind.DELETE else "PUT"
        body = None if value is None else value.encode()
        t0 = time.monotonic_ns()
        status, _, new_etag, detail = await self._request(method, node, key, body, headers)
        t1 = time.monotonic_ns()
        common = dict(
            process=self.cid,
            key=key,
            kind=kind,
            invoke_ns=t0,
            node=node,
            value=value,
            expected=expected,
            detail=detail,
        )
        if status is not None and 200 <= status < 300:
            created = (status == 201) if kind is Kind.WRITE else None
            return self.rec.add(
                **common, outcome=Outcome.OK, complete_ns=t1, created=created, etag=new_etag
            )
        definite_fail = {Kind.DELETE: (404,), Kind.CAS: (412,), Kind.CREATE: (412,)}
        if status in definite_fail.get(kind, ()):
            return self.rec.add(**common, outcome=Outcome.FAIL, complete_ns=t1)
        self._unexpected(status, kind.value)
        return self.rec.add(**common, outcome=Outcome.INFO, complete_ns=None, gave_up_ns=t1)

    def _unexpected(self, status: int | None, what: str) -> None:
        if status is not None and status != 503:
            self.rec.unexpected[f"{what} {status}"] += 1

    async def one(self) -> None:
        """Pick and run one operation (a CAS is a read and then the conditional put)."""
        key = self.group.key
        node = self.rng.choice(sorted(self.urls))
        m = self.mix
        kind = self.rng.choices(
            [Kind.READ, Kind.WRITE, Kind.CAS, Kind.CREATE, Kind.DELETE],
            [m.read, m.write, m.cas, m.create, m.delete],
        )[0]
        try:
            if kind is Kind.READ:
                await self.read(node, key)
            elif kind is Kind.CAS:
                got = await self.read(node, key)
                if got.outcome is Outcome.OK and got.value is not None and got.etag:
                    node = self.rng.choice(sorted(self.urls))
                    await self.mutate(Kind.CAS, node, key, expected=got.value, etag=got.etag)
            else:
                await self.mutate(kind, node, key)
        except _Unsent as exc:
            self.rec.unsent[str(exc)] += 1
            await asyncio.sleep(0.05)  # the node is down; do not spin on it
        self.group.count()

    async def run(self, until_ns: int) -> None:
        async with new_session() as session:
            self.session = session
            while time.monotonic_ns() < until_ns:
                await self.one()
            self.session = None


def new_session() -> aiohttp.ClientSession:
    """A keep-alive session that never resends a request by itself.

    aiohttp resends PUT and DELETE once when the connection breaks mid-request (RFC 9112
    "idempotent" retry). For us that is unsound twice over: the first attempt may have taken
    effect (so a CAS retry would wrongly see 412, a put could land twice around another
    write), and if the resend cannot connect we would record a possibly-applied op as never
    sent. There is no public switch; aiohttp's own test client sets this attribute.
    """
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    if not hasattr(session, "_retry_connection"):
        raise RuntimeError("aiohttp changed: cannot disable its automatic request retry")
    session._retry_connection = False
    return session


class _Unsent(Exception):
    """The connection could not be opened: the request never left this process."""


async def final_reads(
    urls: dict[str, str],
    keys: Sequence[str],
    recorder: Recorder,
    timeout: float,
    deadline_s: float = 60.0,
) -> dict[str, bool]:
    """After healing: read every key once through every node, retrying a failed read (bounded
    by `deadline_s` overall). Returns, per key, whether at least one read succeeded. These
    reads go into the history like any other, so a lost write shows up in the check."""
    ok = dict.fromkeys(keys, False)
    until = time.monotonic() + deadline_s
    async with new_session() as session:
        client = Client(-1, urls, KeyGroup("final", 1), recorder, random.Random(0), timeout, Mix())
        client.session = session
        gate = asyncio.Semaphore(8)

        async def read_everywhere(key: str) -> None:
            async with gate:
                for node in sorted(urls):
                    while time.monotonic() < until:
                        try:
                            got = await client.read(node, key)
                        except _Unsent:
                            got = None
                        if got is not None and got.outcome is Outcome.OK:
                            ok[key] = True
                            break
                        await asyncio.sleep(0.2)

        await asyncio.gather(*(read_everywhere(k) for k in keys))
    return ok
