"""The OpenAPI document tells the truth about the running server, and undeclared methods get a 405.

Routes declare their error responses (`schemas.errors`) and links; what depends on the server is
filled in when `/openapi.json` is asked for: text limits from the settings (`x-limited-by`) and the
engines that can speak here (`x-choices`), so a generated client or a fuzzer sees exactly what this
server accepts.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from engines.base import Capability
from studio.api.errors import OPENAI_PREFIX, error_response
from studio.core import Studio
from studio.services.speech import OPENAI_MODELS

TASK_FROM_RESPONSE = {"task_id": "$response.body#/task_id"}
VOICE_FROM_RESPONSE = {"voice_id": "$response.body#/id"}


def links(parameters: dict[str, str], *operations: str) -> dict[int | str, dict[str, Any]]:
    """A 200 response's OpenAPI links: the id it answers with is what `operations` take."""
    return {
        200: {
            "links": {
                "".join(word.title() for word in operation.split("_")): {
                    "operationId": operation,
                    "parameters": parameters,
                }
                for operation in operations
            }
        }
    }


TASK_OPERATIONS = ("get_task", "task_logs", "cancel_task", "share_task", "delete_task")
TASK_LINKS = links(TASK_FROM_RESPONSE, *TASK_OPERATIONS)
VOICE_LINKS = links(
    VOICE_FROM_RESPONSE,
    "get_voice",
    "update_voice",
    "voice_reference",
    "voice_preview",
    "fit_voice",
    "delete_voice",
)


def install_contract(app: FastAPI, studio: Studio) -> None:
    """Serve the document with the server's own limits and choices; answer 405 for undeclared methods."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        document = copy.deepcopy(generate())  # FastAPI caches its part; ours follows the server
        _fill(document, _server_values(studio))
        _errors_as_json(document)
        _forms_without_null(document)
        return document

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(ApiFallback, routes=lambda: app.routes)


def _server_values(studio: Studio) -> dict[str, Any]:
    speaking = sorted(engine.info.name for engine in studio.registry.available(Capability.TTS))
    return {
        "x-limited-by": {
            "max_text_chars": studio.settings.max_text_chars,
            "max_dialogue_chars": studio.dialogue.max_chars,
        },
        "x-choices": {
            "engines": speaking,
            "dialogue_engines": sorted(e.info.name for e in studio.registry.available(Capability.DIALOGUE)),
            "models": [*OPENAI_MODELS, *speaking],
            "task_kinds": list(studio.runner.kinds),
            "steps": sorted({step for kind in studio.runner.kinds.values() for step in kind.steps}),
        },
    }


def _fill(node: Any, values: dict[str, Any]) -> None:
    if isinstance(node, list):
        for item in node:
            _fill(item, values)
        return
    if not isinstance(node, dict):
        return
    if (setting := node.pop("x-limited-by", None)) is not None:
        node["maxLength"] = values["x-limited-by"][setting]
    if (choices := node.pop("x-choices", None)) is not None:
        nullable = {"type": "null"} in node.get("anyOf", [])
        node["enum"] = values["x-choices"][choices] + ([None] if nullable else [])
    for value in node.values():
        _fill(value, values)


API_PREFIXES = ("/api/", "/v1/")


def _errors_as_json(document: dict[str, Any]) -> None:
    """Every error is `ErrorBody` JSON, whatever the route answers with when it succeeds (FastAPI
    would list a text or audio route's errors under that media type, and its own 422 body)."""
    error_body = {"schema": {"$ref": "#/components/schemas/ErrorBody"}}
    for operations in document["paths"].values():
        for operation in operations.values():
            for status, response in operation["responses"].items():
                if status >= "400":
                    response["content"] = {"application/json": error_body}
    for unused in ("HTTPValidationError", "ValidationError"):
        document["components"]["schemas"].pop(unused, None)


def _forms_without_null(document: dict[str, Any]) -> None:
    """A form field cannot be sent as null (only left out): optional form fields and files are
    stated as their type alone, not "or null"."""
    for operations in document["paths"].values():
        for operation in operations.values():
            form = operation.get("requestBody", {}).get("content", {}).get("multipart/form-data")
            if form is None:
                continue
            schema = form["schema"]
            if "$ref" in schema:
                schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
            for field in schema.get("properties", {}).values():
                kinds = [kind for kind in field.get("anyOf", []) if kind != {"type": "null"}]
                if len(kinds) == 1 and len(kinds) < len(field["anyOf"]):
                    del field["anyOf"]
                    field.update(kinds[0])
                    if "default" in field and field["default"] is None:
                        del field["default"]


class ApiFallback:
    """An API path asked with a method it does not take answers 405 with `Allow`, and an unknown path
    under the API's prefixes a 404 in the API's error shape (without this the UI, mounted at `/`,
    would take both and answer its own 404)."""

    METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")

    def __init__(self, app: ASGIApp, routes: Callable[[], list[BaseRoute]]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            match = self._match(scope)
            path = scope["path"]
            openai = path.startswith(OPENAI_PREFIX)
            if match is Match.PARTIAL:
                allowed = ", ".join(
                    m for m in self.METHODS if self._match({**scope, "method": m}) is Match.FULL
                )
                response = error_response(
                    405, "method_not_allowed", f"{path} takes {allowed}", {"Allow": allowed}, openai
                )
                await response(scope, receive, send)
                return
            if match is Match.NONE and path.startswith(API_PREFIXES):
                response = error_response(
                    404, "not_found", f"there is no {path}; the routes are listed at /docs", None, openai
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _match(self, scope: Scope) -> Match:
        """How the API's routes (not the UI's mount) match: FULL, PARTIAL (path only) or NONE."""
        best = Match.NONE
        for route in self.routes():
            if isinstance(route, Mount):
                continue
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return match
            if match is Match.PARTIAL:
                best = match
        return best
