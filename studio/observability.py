"""Operations: structured logs, request ids and Prometheus metrics.

Logs: `configure_logging(json=True)` writes one JSON object per line on stderr:
`{"ts", "level", "logger", "event", ...fields}`. Lines made with `extra={"event": ..., ...}` carry
their fields as they are (`request`, `task`, `engine` events); any other log line is event `log`
with its `message`. `STUDIO_LOG_FORMAT=text` (read by app.py) gives plain text lines instead.

Requests: `RequestLogMiddleware` gives every HTTP request an id (an incoming `X-Request-ID` is kept,
else a new one), returns it as `X-Request-ID`, adds it to every log line made while the request
runs, counts the request in the metrics and logs one `request` line (Gradio's polling and static
files are counted but not logged).

Metrics: `Metrics` is one Prometheus registry per app, served at `GET /metrics` (text format, no API
key needed): request counts and durations by route template, tasks by kind and status (read from
the task store at scrape time), task outcomes, engine loads/unloads, and the process's memory/CPU.
The task runner and the engines report their events to `Metrics.observe` through their
`listeners` lists, so several apps in one process never share counts.
"""

from __future__ import annotations

import collections
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from studio.api.deps import caller
from studio.tasks.store import TaskStatus

if TYPE_CHECKING:
    from studio.core import Studio

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "RequestLogMiddleware", "configure_logging"]

request_log = logging.getLogger("studio.requests")
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
# Counted in the metrics, never logged: the UI polls these all the time.
QUIET_PATHS = ("/gradio_api/queue/data", "/gradio_api/heartbeat", "/assets", "/static", "/favicon")
_GOOD_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# Attributes every LogRecord has; anything else on a record came in through `extra=` (but uvicorn's
# `color_message`, the message again with terminal colours, is left out).
_RECORD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "color_message",
}


# ---- logs ------------------------------------------------------------------------------------------
def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS and k != "event"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, event, then the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", "log"),
        }
        if line["event"] == "log":
            line["message"] = record.getMessage()
        line |= _fields(record)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message key=value ...` for people reading a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        return f"{text} | {fields}" if fields else text


class _RequestIdFilter(logging.Filter):
    """Adds the current request's id to every line logged while that request runs."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = REQUEST_ID.get()
        if request_id and not hasattr(record, "request_id"):
            record.request_id = request_id
        return True


def configure_logging(json: bool = True, level: int = logging.INFO) -> None:
    """Send every log line to stderr, as JSON lines (`json=True`) or plain text."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for chatty in ("httpx", "httpcore", "multipart", "urllib3"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


# ---- metrics ---------------------------------------------------------------------------------------
TASK_OUTCOMES = ("completed", "failed", "cancelled", "paused", "interrupted")


class Metrics:
    """One app's Prometheus registry; `observe` takes the runner's and engines' events."""

    def __init__(self, studio: Studio) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "studio_requests_total",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "studio_request_seconds",
            "HTTP request duration by route template",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        self.task_outcomes = Counter(
            "studio_task_outcomes_total",
            f"Task runs that ended, by kind and outcome ({', '.join(TASK_OUTCOMES)})",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.engine_events = Counter(
            "studio_engine_events_total",
            "Engine model loads and unloads",
            ["engine", "action"],
            registry=self.registry,
        )
        self.registry.register(_StudioCollector(studio))
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, cpu, open fds

    def observe(self, event: dict[str, Any]) -> None:
        """A task or engine event (the same fields that are logged)."""
        if event.get("event") == "task" and event.get("action") in TASK_OUTCOMES:
            self.task_outcomes.labels(event["kind"], event["action"]).inc()
        elif event.get("event") == "engine":
            self.engine_events.labels(event["engine"], event["action"]).inc()

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.request_seconds.labels(route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StudioCollector(Collector):
    """Gauges read at scrape time: tasks by kind/status, the queue, which engines are in memory."""

    def __init__(self, studio: Studio) -> None:
        self.studio = studio

    def collect(self) -> Iterator[Metric]:
        counts = collections.Counter((t.kind, t.status.value) for t in self.studio.store.list())
        tasks = GaugeMetricFamily(
            "studio_tasks", "Tasks in the store by kind and status", labels=["kind", "status"]
        )
        for kind in sorted(set(self.studio.runner.kinds) | {kind for kind, _ in counts}):
            for status in TaskStatus:
                tasks.add_metric([kind, status.value], counts[(kind, status.value)])
        yield tasks
        pending = sum(n for (_, status), n in counts.items() if status == TaskStatus.PENDING.value)
        yield GaugeMetricFamily("studio_queue_length", "Tasks waiting to run", value=pending)
        loaded = GaugeMetricFamily(
            "studio_engine_loaded", "1 if the engine's model is in memory", labels=["engine"]
        )
        for name in self.studio.registry.names():
            loaded.add_metric([name], 1.0 if self.studio.registry.engine(name).is_loaded else 0.0)
        yield loaded


# ---- requests --------------------------------------------------------------------------------------
def route_template(scope: Scope) -> str:
    """The matched route's path template (`/api/v1/task/{task_id}`), never the raw path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if route is None or isinstance(route, Mount) or not isinstance(path, str):
        return "unmatched"
    return re.sub(r"\{(\w+):\w+\}", r"{\1}", path)  # as the OpenAPI document names it: no convertor


def _owner(scope: Scope) -> str:
    """Who calls, as `studio.api.deps.caller` names them; `unauthenticated` instead of a 401."""
    try:
        return caller(Request(scope))
    except Exception:
        return "unauthenticated"


class RequestLogMiddleware:
    """Request id in and out, one log line and the request metrics per HTTP request (pure ASGI:
    streamed responses pass through untouched)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent_id = Headers(scope=scope).get("x-request-id", "")
        request_id = sent_id if _GOOD_ID.fullmatch(sent_id) else uuid.uuid4().hex[:12]
        scope.setdefault("state", {})["request_id"] = request_id
        method, path = scope["method"], scope["path"]
        owner = _owner(scope)
        status = 500  # unless a response starts
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        token = REQUEST_ID.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            self.metrics.observe_request(method, route_template(scope), status, seconds)
            if not path.startswith(QUIET_PATHS):
                request_log.log(
                    logging.WARNING if status >= 500 else logging.INFO,
                    "%s %s %s %.1f ms",
                    method,
                    path,
                    status,
                    seconds * 1000,
                    extra={
                        "event": "request",
                        "method": method,
                        "path": path,
                        "status": status,
                        "duration_ms": round(seconds * 1000, 1),
                        "owner": owner,
                        "request_id": request_id,
                    },
                )
            REQUEST_ID.reset(token)
