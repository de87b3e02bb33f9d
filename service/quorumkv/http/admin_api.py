"""The membership admin API the operator drives (under `/internal/`: token required).

`GET /internal/v1/membership` shows the configuration and the change under way or last made;
`POST /internal/v1/membership` with `{"members": {"id": "url", ...}}` starts the change to that
member set (202), or reports it if it is already running or done. Asking again is how an
interrupted change is resumed.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from quorumkv.errors import BadRequest, ServiceError
from quorumkv.http.auth import requires_token
from quorumkv.http.keys import NODE
from quorumkv.replication.reconfig import ChangeRefused
from quorumkv.settings import SettingsError, parse_peers

MEMBERSHIP_PATH = "/internal/v1/membership"

routes = web.RouteTableDef()


class ChangeConflict(ServiceError):
    status = 409
    error = "change_refused"


def _view(request: web.Request) -> dict[str, object]:
    node = request.app[NODE]
    changer = node.changer
    assert changer is not None
    return {"node_id": node.settings.node_id, "config": node.membership.config.to_json(),
            "change": None if changer.progress is None else changer.progress.to_json()}


@routes.get(MEMBERSHIP_PATH)
@requires_token
async def get_membership(request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps(_view(request)), content_type="application/json")


@routes.post(MEMBERSHIP_PATH)
@requires_token
async def change_membership(request: web.Request) -> web.Response:
    try:
        body = orjson.loads(await request.read())
        members = body["members"]
        if not isinstance(members, dict) or not members:
            raise ValueError("members must be a non-empty map of node id to URL")
        for node, url in members.items():  # as one ID=URL item each, not a list of them
            if not isinstance(url, str) or "," in node + url or "=" in node:
                raise ValueError(f"member {node!r}: an id has no ',' or '=', a URL no ','")
        target = parse_peers([f"{node}={url}" for node, url in members.items()])
    except (ValueError, KeyError, TypeError, SettingsError) as exc:
        raise BadRequest(f'expected {{"members": {{"id": "url", ...}}}}: {exc}') from None
    changer = request.app[NODE].changer
    assert changer is not None
    try:
        progress = await changer.request(target)
    except ChangeRefused as exc:
        raise ChangeConflict(str(exc)) from None
    status = 200 if progress.state == "done" else 202
    return web.Response(status=status, body=orjson.dumps(_view(request)),
                        content_type="application/json")
