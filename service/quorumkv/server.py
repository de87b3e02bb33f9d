"""Runs one replica's HTTP server until SIGTERM/SIGINT, on uvloop when available."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage

from quorumkv import logs
from quorumkv.http.app import make_app
from quorumkv.http.errors import JsonErrorsHandler
from quorumkv.http.fast_path import FastPath
from quorumkv.http.keys import NODE
from quorumkv.settings import ServeSettings
from quorumkv.storage.base import StorageError

log = logging.getLogger("quorumkv.server")


# While the log's compaction thread encodes a snapshot, the event loop waits at most this long
# for the GIL at a time (the default, 5 ms, would stall every request in flight that long).
GIL_SWITCH_INTERVAL = 0.0005


EXIT_STORAGE = 3  # the data directory cannot be opened, is in use, or is not a QuorumKV one
EXIT_LISTEN = 5  # the listen address is taken, or not one of this host's
MAX_LINE = 16 * 1024
SHUTDOWN_GRACE = 10.0  # seconds for requests in progress to be answered
# Fewer, cheaper collections: the replica allocates many short-lived objects per request and
# keeps every key's state for good. Measured on the benchmark: GET p99 243 -> 48 ms.
# Every key's state stays tracked by the collector (named tuples, unlike plain ones, are never
# untracked), so new keys pass through the young generations once, and the oldest one is
# never collected (a full pass over ~6 objects per key: 0.5 s at 130k keys; under load it
# found no garbage). A middle generation collected every other young collection keeps a
# growing keyspace's pauses short: create-only load, max pause 390 -> 31 ms, p99 334 -> 24 ms.
GC_THRESHOLDS = (20_000, 2, 1_000_000)


def _tune_gc() -> None:
    """Move everything loaded at start (every key's state) out of the collector's sight."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class _BadRequestsQuietly(logging.Filter):
    """aiohttp logs each malformed request at ERROR with a traceback; a fuzzer or a port
    scanner would flood the log. One warning line is what an operator needs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], BadHttpMessage):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args = f"malformed request: {record.exc_info[1]}", ()
            record.exc_info = None
        return True


def _stop_at_once(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def run_server(settings: ServeSettings) -> int:
    # As PID 1 (a container's command) a process ignores SIGTERM unless it handles it: until
    # the server's own handler is in place (opening a large data directory takes seconds),
    # stop at once, or a pod deleted while starting waits out its whole grace period
    signal.signal(signal.SIGTERM, _stop_at_once)
    logs.setup(settings.log_level, node=settings.node_id)
    logging.getLogger("aiohttp.server").addFilter(_BadRequestsQuietly())
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    try:
        import uvloop
    except ImportError:  # uvloop is optional off Linux; asyncio works, slower
        run = asyncio.run
    else:
        run = uvloop.run
    try:
        return run(_serve(settings))
    except StorageError as exc:  # the data directory: an operator's to look at, no traceback
        log.error("cannot start on this data directory", extra={
            "data_dir": str(settings.data_dir), "error": str(exc)})
        return EXIT_STORAGE


async def _serve(settings: ServeSettings) -> int:
    # long request lines: a 1024-byte key percent-encoded takes up to ~9 KiB
    # auto_decompress off: a value is the body's bytes, never something aiohttp inflated
    runner = web.AppRunner(make_app(settings), access_log=None, handle_signals=False,
                           max_line_size=MAX_LINE, max_field_size=MAX_LINE,
                           auto_decompress=False)
    loop = asyncio.get_running_loop()
    # The address is taken before the node starts: a port in use is a setup mistake found
    # before the data directory is made, or a new cluster bootstrapped in it.
    fast_path: FastPath | None = None

    def accept() -> asyncio.BaseProtocol:
        assert fast_path is not None  # connections are accepted only once it is set
        return fast_path()

    try:
        server = await loop.create_server(accept, settings.listen_host, settings.listen_port,
                                          backlog=1024, reuse_address=True,
                                          start_serving=False)
    except OSError as exc:  # no traceback: the operator's to fix
        log.error("cannot listen", extra={
            "listen": f"{settings.listen_host}:{settings.listen_port}",
            "error": exc.strerror or str(exc)})
        return EXIT_LISTEN
    try:
        await runner.setup()
    except BaseException:
        server.close()
        raise
    _tune_gc()
    assert runner.server is not None
    # key requests take the lean path; everything else, and anything unusual, aiohttp's
    # (aiohttp's own connection handler, with the runner's settings, but JSON error bodies)
    handlers = runner.server
    fast_path = FastPath(runner.app[NODE],
                         lambda: JsonErrorsHandler(handlers, loop=loop, **handlers._kwargs))
    await server.start_serving()
    sweeper = asyncio.create_task(fast_path.close_idle_connections())
    log.info("serving", extra={"listen": f"{settings.listen_host}:{settings.listen_port}",
                               "data_dir": str(settings.data_dir)})
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    server.close()
    sweeper.cancel()
    await fast_path.shutdown(SHUTDOWN_GRACE)
    await runner.cleanup()
    return 0
