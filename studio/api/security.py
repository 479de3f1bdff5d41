"""API keys, per-client rate limits and daily quotas (all off unless configured).

Keys are configured as `KEY[:RATE_PER_MINUTE[:DAILY_REQUESTS]]` (env `STUDIO_API_KEYS`, comma
separated, or a YAML list): a key without numbers gets the server's default rate and no quota.
Whoever calls is an *owner*: `key-<hash>` for a key (never the key itself), `ip-<address>` for an
anonymous REST client, and the UI's own names (see studio/ui). Owners only see their own tasks.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from dataclasses import dataclass

from fastapi import Request

from studio.errors import BadInput, RateLimited, Unauthorized


@dataclass(frozen=True)
class ApiKey:
    key: str
    per_minute: int | None = None  # None: the server's default
    daily_requests: int | None = None  # None: no quota

    @classmethod
    def parse(cls, spec: str) -> ApiKey:
        key, *limits = spec.split(":")
        try:
            numbers = [int(n) for n in limits]
        except ValueError:
            raise BadInput(
                f"API key spec '{key[:4]}…:{':'.join(limits)}' must be KEY[:PER_MINUTE[:DAILY]]"
            ) from None
        return cls(key, *numbers[:2])

    @property
    def owner(self) -> str:
        return owner_of(self.key)


def client_key(request: Request) -> str | None:
    """The API key a request carries: `Authorization: Bearer <key>` or `X-API-Key: <key>`."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.headers.get("x-api-key")


def owner_of(key: str) -> str:
    """A stable, non-secret name for whoever holds `key` (stored with their tasks)."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:12]


class ApiKeys:
    def __init__(self, specs: list[str]) -> None:
        self.keys = [ApiKey.parse(spec) for spec in specs]

    def identify(self, request: Request) -> ApiKey | None:
        """The caller's key; raises Unauthorized when keys are configured and none valid is sent."""
        sent = client_key(request)
        if not self.keys:
            return ApiKey(sent) if sent else None
        if not sent:
            raise Unauthorized("this server needs an API key: send 'Authorization: Bearer <key>'")
        for known in self.keys:
            if hmac.compare_digest(sent, known.key):
                return known
        raise Unauthorized("the API key is not valid", "invalid_api_key")


class RateLimiter:
    """Token bucket per client (`per_minute` sustained, `burst` at once) and an optional daily quota."""

    def __init__(self, per_minute: int, burst: int) -> None:
        self.per_minute = per_minute
        self.burst = max(burst, 1)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._days: dict[str, tuple[int, int]] = {}  # client -> (day number, requests that day)
        self._lock = threading.Lock()

    def check(self, client: str, per_minute: int | None = None, daily: int | None = None) -> None:
        rate = (self.per_minute if per_minute is None else per_minute) / 60.0
        now = time.monotonic()
        with self._lock:
            if daily is not None:
                today = int(time.time() // 86400)
                day, used = self._days.get(client, (today, 0))
                used = used if day == today else 0
                if used >= daily:
                    raise RateLimited(
                        f"daily quota of {daily} requests used up; it resets at 00:00 UTC",
                        "quota_exceeded",
                        retry_after=86400 - time.time() % 86400,
                    )
                self._days[client] = (today, used + 1)
            if rate <= 0:
                return
            tokens, last = self._buckets.get(client, (float(self.burst), now))
            tokens = min(self.burst, tokens + (now - last) * rate)
            if tokens < 1.0:
                self._buckets[client] = (tokens, now)
                wait = (1.0 - tokens) / rate
                raise RateLimited(f"too many requests: try again in {wait:.1f} s", retry_after=wait)
            self._buckets[client] = (tokens - 1.0, now)
