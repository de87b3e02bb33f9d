"""Maps exceptions to JSON error responses, in one place, for every route."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from quorumkv.errors import QuorumUnavailable, ServiceError, UnknownPath

log = logging.getLogger("quorumkv.http")

JSON = "application/json"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_body(error: str, detail: str = "") -> bytes:
    return orjson.dumps({"error": error, "detail": detail})


def error_headers(exc: ServiceError) -> dict[str, str]:
    """Headers that go with the error's status: when to retry a 503."""
    if isinstance(exc, QuorumUnavailable):
        return {"Retry-After": str(exc.retry_after)}
    return {}


def error_response(status: int, error: str, detail: str = "",
                   headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=error_body(error, detail),
                        content_type=JSON, headers=headers)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ServiceError as exc:
        return error_response(exc.status, exc.error, exc.detail, error_headers(exc))
    except web.HTTPNotFound:  # the router's: no route for this path
        return error_response(UnknownPath.status, UnknownPath.error,
                              f"no endpoint {request.path!r}; keys are under /v1/kv/")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        error = exc.reason.lower().replace(" ", "_")
        return error_response(exc.status, error, exc.text or exc.reason,
                              {k: v for k, v in exc.headers.items() if k == "Allow"})
    except ConnectionError as exc:  # the client went away mid-request: nobody to answer
        log.info("client connection lost", extra={
            "method": request.method, "path": request.path, "error": str(exc)})
        return error_response(400, "connection_lost", str(exc))
    except Exception:
        log.exception("unexpected error", extra={"method": request.method, "path": request.path})
        return error_response(500, "internal_error", "see the replica's log")


class JsonErrorsHandler(RequestHandler):
    """aiohttp's connection handler, answering what its HTTP parser refuses (a malformed
    header, TLS sent to the plain port) in JSON too, as SPEC.md has every error body."""

    def handle_error(self, request: web.BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        plain = super().handle_error(request, status, exc, message)  # logs; closes after
        if status >= 500:
            error, detail = "internal_error", "see the replica's log"
        else:
            error = HTTPStatus(status).phrase.lower().replace(" ", "_")
            # the parser's message points at the fault with a caret on a line of its own
            detail = " ".join(line.strip() for line in (message or "").splitlines()
                              if line.strip() and line.strip() != "^")
        response = error_response(plain.status, error, detail)
        response.force_close()
        return response
