"""A websocket to one peer that carries request frames, answered in any order by id.

Why not a POST per batch: aiohttp's request/response machinery costs about 100 µs of CPU per
exchange (client and server together), a frame on an open websocket about 20 µs (measured on
this machine, loopback, uvloop) — and a peer link sends hundreds of batches a second.

The stream opens on first use and again after it breaks. A request that gets no answer in
time closes it, as a timed-out POST closes its connection: a peer that went silent (paused,
partitioned, restarted behind a partition) must cost a reconnect, never a stream stuck on a
dead TCP connection. A stream nobody used for `IDLE_CLOSE` seconds closes itself, so links
made for one membership change do not keep connections open.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools

import aiohttp

from quorumkv.replication.wire import pack_frame, unpack_frame

STREAM_PATH = "/internal/v1/stream"
IDLE_CLOSE = 30.0
CLOSE_TIMEOUT = 1.0  # a paused peer never answers our close frame
# A handshake takes milliseconds; a paused peer's kernel still accepts the connection, so
# without this a request would wait its whole timeout (seconds, on a forwarding link) for a
# stream that never comes, though nothing was sent and its caller could go another way.
CONNECT_TIMEOUT = 1.0


class StreamBroken(Exception):
    """No answer. `sent` is False when the request certainly never left (no stream)."""

    def __init__(self, reason: str, *, sent: bool) -> None:
        super().__init__(reason)
        self.sent = sent


Reply = tuple[int, bytes]  # (status, body)


class _Connection:
    """One open websocket and the requests waiting for an answer on it."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.pending: dict[int, asyncio.Future[Reply]] = {}
        self.reader: asyncio.Task[None] | None = None
        self.last_request = asyncio.get_running_loop().time()
        self.idle_timer: asyncio.TimerHandle | None = None

    def fail(self, reason: str) -> None:
        pending, self.pending = self.pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(StreamBroken(reason, sent=True))
                future.exception()  # a caller that stopped waiting must not warn


class PeerStream:
    def __init__(self, base_url: str, session: aiohttp.ClientSession,
                 headers: dict[str, str], max_frame: int) -> None:
        self.url = base_url.rstrip("/") + STREAM_PATH
        self._session = session
        self._headers = headers
        self._max_frame = max_frame
        self._conn: _Connection | None = None
        self._connecting = asyncio.Lock()
        self._ids = itertools.count(1)
        self._closing: set[asyncio.Task[bool]] = set()

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.ws.closed

    async def request(self, body: bytes, timeout: float) -> Reply:
        """Send `body` as one frame and return the answer's (status, body) within `timeout`
        seconds; raises `StreamBroken`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            async with asyncio.timeout_at(deadline):
                conn = await self._open()
        except TimeoutError:
            raise StreamBroken(f"no stream within {timeout:g} s", sent=False) from None
        request_id = next(self._ids)
        conn.last_request = loop.time()
        answer: asyncio.Future[Reply] = loop.create_future()
        conn.pending[request_id] = answer
        try:
            async with asyncio.timeout_at(deadline):
                await conn.ws.send_bytes(pack_frame(request_id, 0, body))
                return await answer
        except TimeoutError:
            self._drop(conn, f"no answer within {timeout:g} s")
            raise StreamBroken(f"no answer within {timeout:g} s", sent=True) from None
        except (aiohttp.ClientError, ConnectionError) as exc:
            self._drop(conn, f"{type(exc).__name__}: {exc}")
            raise StreamBroken(f"the stream broke: {type(exc).__name__}: {exc}",
                               sent=True) from None
        finally:
            conn.pending.pop(request_id, None)

    async def _open(self) -> _Connection:
        async with self._connecting:
            if self._conn is not None and not self._conn.ws.closed:
                return self._conn
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    ws = await self._session.ws_connect(
                        self.url, headers=self._headers, max_msg_size=self._max_frame,
                        autoping=True, compress=0,
                        timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=CLOSE_TIMEOUT))
            except TimeoutError:
                raise StreamBroken(f"no stream within {CONNECT_TIMEOUT:g} s (the peer accepts "
                                   "connections but does not answer)", sent=False) from None
            except aiohttp.WSServerHandshakeError as exc:  # e.g. 401: a wrong token
                raise StreamBroken(f"the peer refused the stream: {exc.status} {exc.message}",
                                   sent=False) from None
            except (aiohttp.ClientError, OSError) as exc:
                raise StreamBroken(f"{type(exc).__name__}: {exc}", sent=False) from None
            conn = self._conn = _Connection(ws)
            conn.reader = asyncio.create_task(self._read(conn), name=f"stream {self.url}")
            conn.idle_timer = asyncio.get_running_loop().call_later(
                IDLE_CLOSE, self._close_if_idle, conn)
            return conn

    async def _read(self, conn: _Connection) -> None:
        """Hand each answer to its request until the stream ends.

        No timeout on `receive`: aiohttp's per-call timeout costs about as much as the
        receive itself; idleness is checked by a timer instead (`_close_if_idle`)."""
        reason = "the peer closed the stream"
        try:
            async for msg in conn.ws:
                if msg.type is not aiohttp.WSMsgType.BINARY:
                    reason = (f"stream error: {conn.ws.exception()}"
                              if msg.type is aiohttp.WSMsgType.ERROR else "unexpected text frame")
                    break
                try:
                    request_id, status, body = unpack_frame(msg.data)
                except ValueError as exc:
                    reason = f"malformed frame: {exc}"
                    break
                answer = conn.pending.get(request_id)
                if answer is not None and not answer.done():
                    answer.set_result((status, body))
        except Exception as exc:  # the reader must never die silently with requests waiting
            reason = f"{type(exc).__name__}: {exc}"
        self._drop(conn, reason)

    def _close_if_idle(self, conn: _Connection) -> None:
        if self._conn is not conn:
            return
        loop = asyncio.get_running_loop()
        idle_until = conn.last_request + IDLE_CLOSE
        if conn.pending or loop.time() < idle_until:
            conn.idle_timer = loop.call_at(max(idle_until, loop.time() + 1.0),
                                           self._close_if_idle, conn)
        else:
            self._drop(conn, "idle")

    def _drop(self, conn: _Connection, reason: str) -> None:
        """Fail what waits on `conn` and close it in the background."""
        if self._conn is conn:
            self._conn = None
        if conn.idle_timer is not None:
            conn.idle_timer.cancel()
        conn.fail(reason)
        if not conn.ws.closed:
            task = asyncio.create_task(conn.ws.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def abort(self, reason: str) -> None:
        """Fail every request waiting for an answer and close the stream (in the background)."""
        if self._conn is not None:
            self._drop(self._conn, reason)

    async def close(self) -> None:
        conn = self._conn
        if conn is not None:
            self._drop(conn, "closed")
            if conn.reader is not None:
                conn.reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await conn.reader
        for task in list(self._closing):
            with contextlib.suppress(Exception):
                await task
