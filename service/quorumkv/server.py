"""Runs one replica's HTTP server until SIGTERM/SIGINT, on uvloop when available."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from quorumkv import logs
from quorumkv.http.app import make_app
from quorumkv.settings import ServeSettings

log = logging.getLogger("quorumkv.server")


def run_server(settings: ServeSettings) -> int:
    logs.setup(settings.log_level, node=settings.node_id)
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
