"""Builds the aiohttp application of one replica and runs it with the node's lifecycle."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from quorumkv.http import admin_api, auth, client_api, peer_api
from quorumkv.http.errors import errors_middleware
from quorumkv.http.keys import MAX_FRAME, NODE, STREAMS
from quorumkv.node import Node
from quorumkv.settings import ServeSettings

# Peer batches carry up to ~4 MiB of values plus one value that may go over; client bodies
# are checked against the value limit by the handler itself.
MAX_BODY_BYTES = 16 * 1024 * 1024


def make_app(settings: ServeSettings) -> web.Application:
    max_body = max(settings.max_value_bytes * 2, MAX_BODY_BYTES)
    app = web.Application(middlewares=[errors_middleware], client_max_size=max_body)
    app[MAX_FRAME] = max_body
    app[STREAMS] = set()
    app.on_shutdown.append(peer_api.close_streams)
    app.add_routes(client_api.routes)
    app.add_routes(peer_api.routes)
    app.add_routes(admin_api.routes)
    app.add_routes(auth.fallback_routes)  # last: it matches every /internal/ path

    async def node_lifecycle(app: web.Application) -> AsyncIterator[None]:
        node = Node(settings)
        app[NODE] = node
        await node.start()
        yield
        await node.stop()

    app.cleanup_ctx.append(node_lifecycle)
    return app
