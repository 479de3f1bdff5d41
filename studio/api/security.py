"""API keys and per-client rate limits (both off unless configured)."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time

from fastapi import Request

from studio.errors import RateLimited, Unauthorized


def client_key(request: Request) -> str | None:
    """The API key a request carries: `Authorization: Bearer <key>` or `X-API-Key: <key>`."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.headers.get("x-api-key")


def owner_of(key: str | None) -> str:
    """A stable, non-secret name for whoever holds `key` (stored with their tasks)."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:12] if key else ""


class ApiKeys:
    def __init__(self, keys: list[str]) -> None:
        self.keys = keys

    def check(self, request: Request) -> str:
        """The caller's owner name; raises Unauthorized when keys are configured and this one is not among them."""
        key = client_key(request)
        if not self.keys:
            return owner_of(key)
        if not key:
            raise Unauthorized("this server needs an API key: send 'Authorization: Bearer <key>'")
        if not any(hmac.compare_digest(key, known) for known in self.keys):
            raise Unauthorized("the API key is not valid", "invalid_api_key")
        return owner_of(key)


class RateLimiter:
    """Token bucket per client: `per_minute` sustained, `burst` at once."""

    def __init__(self, per_minute: int, burst: int) -> None:
        self.rate = per_minute / 60.0
        self.burst = max(burst, 1)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, client: str) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(client, (float(self.burst), now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[client] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
                raise RateLimited(f"too many requests: try again in {wait:.1f} s")
            self._buckets[client] = (tokens - 1.0, now)
