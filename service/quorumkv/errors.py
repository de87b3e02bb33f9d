"""Errors that decide what the client is told; the HTTP layer maps them in one place."""

from __future__ import annotations


class ServiceError(Exception):
    status = 500
    error = "internal_error"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.error)
        self.detail = detail


class BadRequest(ServiceError):
    status = 400
    error = "bad_request"


class NotFound(ServiceError):
    status = 404
    error = "not_found"


class UnknownPath(ServiceError):
    """No endpoint at this path: told apart from an absent key (`not_found`), so that a
    client sent to a wrong URL does not take every key for absent."""

    status = 404
    error = "unknown_path"


class PreconditionFailed(ServiceError):
    status = 412
    error = "precondition_failed"


class ValueTooLarge(ServiceError):
    status = 413
    error = "value_too_large"


class UnsupportedEncoding(ServiceError):
    status = 415
    error = "unsupported_content_encoding"


class UnsupportedTransferCoding(ServiceError):
    status = 501
    error = "unsupported_transfer_coding"


class QuorumUnavailable(ServiceError):
    """No quorum answered in time.

    `indeterminate` is True when an accept was sent: the write may still take effect, so the
    client must not assume it failed.
    """

    status = 503
    error = "quorum_unavailable"

    def __init__(self, detail: str = "", *, indeterminate: bool = False,
                 retry_after: int = 1) -> None:
        super().__init__(detail)
        self.indeterminate = indeterminate
        self.retry_after = retry_after
