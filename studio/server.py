"""The one process: FastAPI with the REST routes, and the Gradio UI mounted at `/`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import gradio as gr
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from studio import __version__
from studio.api import routes_dialogue, routes_speech, routes_system, routes_tasks, routes_voices
from studio.api.errors import install_error_handlers
from studio.api.security import ApiKeys, RateLimiter
from studio.config import Settings
from studio.core import Studio
from studio.ui import build_ui


def create_app(settings: Settings | None = None, studio: Studio | None = None) -> FastAPI:
    settings = settings or Settings()
    studio = studio or Studio(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        studio.start()
        yield
        studio.stop()

    app = FastAPI(
        title="Speech Studio API",
        version=__version__,
        description="Speech, dialogue, voice library and long-running tasks. Errors: "
        '`{"error": {"code", "message"}}`.',
        lifespan=lifespan,
    )
    app.state.studio = studio
    app.state.api_keys = ApiKeys(settings.api_keys)
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"], allow_headers=["*"]
        )
    install_error_handlers(app)
    for module in (routes_system, routes_speech, routes_voices, routes_dialogue, routes_tasks):
        app.include_router(module.router)

    users = [tuple(pair.split(":", 1)) for pair in settings.ui_users if ":" in pair]
    return gr.mount_gradio_app(
        app,
        build_ui(studio),
        path="/",
        auth=users or None,
        footer_links=["api"],
        max_file_size=f"{settings.max_upload_mb}mb",
    )
