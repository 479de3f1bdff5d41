"""FastAPI dependencies: the studio, the caller's identity, the rate limit."""

from __future__ import annotations

from fastapi import Request

from studio.core import Studio


def get_studio(request: Request) -> Studio:
    return request.app.state.studio


def caller(request: Request) -> str:
    """The owner name of the caller (checks the API key when keys are configured)."""
    return request.app.state.api_keys.check(request)


def rate_limited_caller(request: Request) -> str:
    owner = caller(request)
    client = owner or (request.client.host if request.client else "unknown")
    request.app.state.rate_limiter.check(client)
    return owner
