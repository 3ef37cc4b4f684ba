"""Reading request bodies and parameters the way ComfyUI does, but answering bad input with
a 4xx instead of aiohttp's 500."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request


class BadInput(Exception):
    """Answered with `response` (a 4xx in the route's own shape)."""

    def __init__(self, response: Any) -> None:
        super().__init__(getattr(response, "status_code", 400))
        self.response = response


class TooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused past `limit` bytes (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise TooLarge()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, limit: int, *, empty: Any = ...) -> Any:
    """The JSON body; ValueError if it is not JSON (an empty body is `empty` if given)."""
    raw = await read_body(request, limit)
    if not raw.strip() and empty is not ...:
        return empty
    return orjson.loads(raw)


def int_param(request: Request, name: str) -> int | None:
    """An integer query parameter (None if absent); ValueError if it is not one."""
    value = request.query_params.get(name)
    return None if value is None else int(value)
