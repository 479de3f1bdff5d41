"""Every error leaves the API as `{"error": {"code", "message"}}` with a fitting status, never a trace.

On OpenAI's routes (`/v1/*`) the body is OpenAI's error shape too, `{"error": {"message", "type",
"param", "code"}}`, so OpenAI clients (its SDK, Open WebUI) read our errors as they read OpenAI's;
`code` and `message` stay the studio's. The studio's own routes keep exactly `code` and `message`:
their clients and tests hold them to that shape, and `type`/`param` would say nothing new there."""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from studio.errors import StudioError
from studio.tasks.configs import describe_problems

log = logging.getLogger("studio.api")


OPENAI_PREFIX = "/v1/"
# OpenAI's error types by status (its SDK picks the exception class by status; `type` is for people).
ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
# Which request field an error is about, in OpenAI's names (`/v1/*` bodies), by the studio's code.
OPENAI_PARAMS = {
    "unknown_voice": "voice",
    "unsupported_language": "voice",
    "unknown_model": "model",
    "unknown_engine": "model",
    "not_a_speech_engine": "model",
    "empty_text": "input",
    "nothing_to_speak": "input",
    "text_too_long": "input",
    "bad_speed": "speed",
    "bad_language": "language",
}


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def error_response(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    openai: bool = False,
    param: str | None = None,
) -> JSONResponse:
    """The error body; `openai`: with OpenAI's `type` and `param` as well (`/v1/*`)."""
    body: dict[str, str | None] = {"code": code, "message": message}
    if openai:
        param = param or OPENAI_PARAMS.get(code)
        body = {"message": message, "type": error_type(status), "param": param, "code": code}
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def is_openai(request: Request) -> bool:
    return request.url.path.startswith(OPENAI_PREFIX)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StudioError)
    async def studio_error(request: Request, error: StudioError) -> JSONResponse:
        retry_after = getattr(error, "retry_after", None)
        headers = {"Retry-After": str(max(1, math.ceil(retry_after)))} if retry_after is not None else None
        return error_response(error.status, error.code, error.message, headers, is_openai(request))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = error.errors()
        where = [str(part) for part in problems[0].get("loc", ()) if part != "body"] if problems else []
        message = describe_problems(problems, skip="body")
        return error_response(
            422, "invalid_input", message, None, is_openai(request), ".".join(where) or None
        )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        code = {400: "bad_body", 404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}.get(
            error.status_code, "http_error"
        )
        message = str(error.detail)
        if error.status_code == 400:  # FastAPI's only 400: a body that does not parse
            message = (
                "the request body could not be read: send JSON, or a multipart form where the route takes one"
            )
        return error_response(
            error.status_code, code, message, getattr(error, "headers", None), is_openai(request)
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(
            500,
            "internal_error",
            "the server failed on this request; see the server log",
            None,
            is_openai(request),
        )
