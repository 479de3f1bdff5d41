"""The one process: FastAPI with the REST routes, and the Gradio UI mounted at `/`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import gradio as gr
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response

from studio import __version__
from studio.api import (
    routes_audiobook,
    routes_dialogue,
    routes_pronunciation,
    routes_speech,
    routes_system,
    routes_tasks,
    routes_training,
    routes_video,
    routes_voices,
)
from studio.api.errors import install_error_handlers
from studio.api.openapi import install_contract
from studio.api.security import ApiKeys, RateLimiter
from studio.config import Settings
from studio.core import Studio
from studio.observability import CONTENT_TYPE_LATEST, Metrics, RequestLogMiddleware
from studio.ui import build_ui


def create_app(settings: Settings | None = None, studio: Studio | None = None) -> FastAPI:
    settings = settings or Settings()
    studio = studio or Studio(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        studio.start()
        yield
        # SIGTERM/SIGINT end here: running resumable tasks go back to pending (their finished pieces
        # stay on disk and they resume on the next start); other running tasks fail as interrupted.
        studio.stop()

    app = FastAPI(
        title="Speech Studio API",
        version=__version__,
        description="Speech, dialogue, voice library and long-running tasks. Errors: "
        '`{"error": {"code", "message"}}`. Every response carries an `X-Request-ID` (yours if you '
        "sent one). `GET /metrics` serves Prometheus metrics without an API key: keep it off the "
        "public internet or scrape it through your proxy.",
        lifespan=lifespan,
        generate_unique_id_function=lambda route: route.name,  # operationIds: the route functions' names
    )
    app.state.studio = studio
    app.state.api_keys = ApiKeys(settings.api_keys)
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
    app.state.metrics = metrics = Metrics(studio)
    studio.runner.listeners.append(metrics.observe)
    for name in studio.registry.names():
        studio.registry.engine(name).listeners.append(metrics.observe)
    install_contract(app, studio)  # before CORS: its preflight answers OPTIONS first
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"], allow_headers=["*"]
        )
    app.add_middleware(RequestLogMiddleware, metrics=metrics)  # added last: sees every request
    install_error_handlers(app)
    for module in (
        routes_system,
        routes_speech,
        routes_voices,
        routes_pronunciation,
        routes_dialogue,
        routes_tasks,
        routes_training,
        routes_video,
        routes_audiobook,
    ):
        app.include_router(module.router)

    @app.get(
        "/metrics",
        tags=["system"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
    )
    def prometheus_metrics() -> Response:
        """Prometheus text format: requests by route, tasks by kind/status, the queue, task outcomes,
        engine loads, process memory. Open like /health (no API key)."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    users = [tuple(pair.split(":", 1)) for pair in settings.ui_users if ":" in pair]
    blocks = build_ui(studio)
    # Gradio's queue polls itself every 1 ms when empty and checks progress every 10 ms (its Linux
    # pace): ~800 event-loop wake-ups a second, ~5% of a core on an idle studio. Its Windows pace
    # (50 ms / 100 ms) costs a UI event at most 50 ms before it starts.
    blocks._queue.sleep_when_free = 0.05
    blocks._queue.progress_update_sleep_when_free = 0.1
    return gr.mount_gradio_app(
        app,
        blocks,
        path="/",
        auth=users or None,
        footer_links=["api"],
        max_file_size=f"{settings.max_upload_mb}mb",
    )
