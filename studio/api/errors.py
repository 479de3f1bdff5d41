"""Every error leaves the API as `{"error": {"code", "message"}}` with a fitting status, never a trace."""

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


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StudioError)
    async def studio_error(_: Request, error: StudioError) -> JSONResponse:
        retry_after = getattr(error, "retry_after", None)
        headers = {"Retry-After": str(max(1, math.ceil(retry_after)))} if retry_after is not None else None
        return error_response(error.status, error.code, error.message, headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_input", describe_problems(error.errors(), skip="body"))

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> JSONResponse:
        code = {400: "bad_body", 404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}.get(
            error.status_code, "http_error"
        )
        message = str(error.detail)
        if error.status_code == 400:  # FastAPI's only 400: a body that does not parse
            message = (
                "the request body could not be read: send JSON, or a multipart form where the route takes one"
            )
        return error_response(error.status_code, code, message, getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "the server failed on this request; see the server log")
