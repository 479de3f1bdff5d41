"""FastAPI dependencies: the studio, the caller's identity (owner), the rate limit."""

from __future__ import annotations

from fastapi import Request

from studio.core import Studio


def get_studio(request: Request) -> Studio:
    return request.app.state.studio


def caller(request: Request) -> str:
    """The caller's owner name: `key-<hash>` with an API key, else `ip-<address>`."""
    key = request.app.state.api_keys.identify(request)
    if key is not None:
        return key.owner
    return f"ip-{request.client.host if request.client else 'unknown'}"


def rate_limited_caller(request: Request) -> str:
    """`caller`, after the caller's rate limit and daily quota (synthesis routes)."""
    key = request.app.state.api_keys.identify(request)
    owner = caller(request)
    limits = (key.per_minute, key.daily_requests) if key else (None, None)
    request.app.state.rate_limiter.check(owner, *limits)
    return owner
