"""Runs one replica's HTTP server until SIGTERM/SIGINT, on uvloop when available."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from aiohttp import web

from quorumkv import logs
from quorumkv.http.app import make_app
from quorumkv.settings import ServeSettings

log = logging.getLogger("quorumkv.server")


# The storage thread gives the GIL back for each fsync and then waits for it at most this
# long while the event loop is busy (default 5 ms, which would add up to 5 ms per commit).
GIL_SWITCH_INTERVAL = 0.0005


def run_server(settings: ServeSettings) -> int:
    logs.setup(settings.log_level, node=settings.node_id)
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    try:
        import uvloop
    except ImportError:  # uvloop is optional off Linux; asyncio works, slower
        return asyncio.run(_serve(settings))
    return uvloop.run(_serve(settings))


async def _serve(settings: ServeSettings) -> int:
    runner = web.AppRunner(make_app(settings), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.listen_host, settings.listen_port,
                       backlog=1024, reuse_address=True)
    await site.start()
    log.info("serving", extra={"listen": f"{settings.listen_host}:{settings.listen_port}",
                               "data_dir": str(settings.data_dir)})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await runner.cleanup()
    return 0
