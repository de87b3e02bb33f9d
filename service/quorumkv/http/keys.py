"""Application keys (`web.AppKey`) shared by the HTTP modules."""

from __future__ import annotations

from aiohttp import web

from quorumkv.node import Node

NODE = web.AppKey("node", Node)
MAX_FRAME = web.AppKey("max_frame", int)  # largest peer batch accepted, bytes
STREAMS = web.AppKey("streams", set[web.WebSocketResponse])  # open peer streams
