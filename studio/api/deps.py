"""FastAPI dependencies: the studio, the caller's identity (owner), the rate limit; the id types
paths take (`{task_id:task_id}`, `{voice_id:voice_id}`), so a path matches a route only with a
well-formed id and `/api/v1/voices/upload` is never read as a voice called "upload"."""

from __future__ import annotations

from fastapi import Request, UploadFile
from starlette.convertors import StringConvertor, register_url_convertor

from studio.core import Studio
from studio.errors import TooLarge
from studio.services.voices import VOICE_ID

TASK_ID = r"^[0-9a-f]{16}$"


class _IdConvertor(StringConvertor):
    def __init__(self, pattern: str) -> None:
        self.regex = pattern.removeprefix("^").removesuffix("$")


register_url_convertor("task_id", _IdConvertor(TASK_ID))
register_url_convertor("voice_id", _IdConvertor(VOICE_ID.pattern))


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


async def read_upload(upload: UploadFile, studio: Studio) -> bytes:
    """The uploaded file's bytes, read a megabyte at a time and refused (413) once past the upload
    limit, so an oversized upload never sits whole in memory."""
    limit = studio.settings.max_upload_bytes
    chunks, size = [], 0
    while chunk := await upload.read(2**20):
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"'{upload.filename}' is larger than the {limit // 2**20} MB upload limit")
        chunks.append(chunk)
    return b"".join(chunks)
