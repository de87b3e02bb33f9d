"""Application keys (`web.AppKey`) shared by the HTTP modules."""

from __future__ import annotations

from aiohttp import web

from quorumkv.node import Node

NODE = web.AppKey("node", Node)
