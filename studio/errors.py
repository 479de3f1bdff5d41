"""Errors the studio answers with: each has an HTTP status and a stable code for clients.

Services raise these with a message that says what to fix; the API turns them into
`{"error": {"code", "message"}}` and the UI shows the message.
"""

from __future__ import annotations


class StudioError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code


class BadInput(StudioError):
    status, code = 422, "invalid_input"


class NotFound(StudioError):
    status, code = 404, "not_found"


class Conflict(StudioError):
    status, code = 409, "conflict"


class TooLarge(StudioError):
    status, code = 413, "too_large"


class UnsupportedMedia(StudioError):
    status, code = 415, "unsupported_media"


class Unauthorized(StudioError):
    status, code = 401, "unauthorized"


class RateLimited(StudioError):
    status, code = 429, "rate_limited"

    def __init__(self, message: str, code: str | None = None, retry_after: float = 2.0) -> None:
        super().__init__(message, code)
        self.retry_after = retry_after  # seconds, sent as Retry-After


class Busy(StudioError):
    """The engine has more queued than the server's wait bound: try again after `retry_after` s."""

    status, code = 503, "busy"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(StudioError):
    status, code = 503, "engine_unavailable"
