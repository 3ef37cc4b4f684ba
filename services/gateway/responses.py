"""Responses in the shapes ComfyUI's aiohttp server gives: JSON as `application/json;
charset=utf-8`, bare statuses with an empty body, aiohttp's `404: Not Found` text."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

JSON_TYPE = "application/json; charset=utf-8"
TEXT_TYPE = "text/plain; charset=utf-8"

_REASONS = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
            413: "Request Entity Too Large"}  # fmt: skip


def json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status, headers=headers, media_type=JSON_TYPE)


def empty(status: int = 200) -> Response:
    """A bare status: ComfyUI's `web.Response(status=...)` (no body, no content type)."""
    return Response(b"", status)


def text(body: str, status: int = 200) -> Response:
    return Response(body, status, media_type=TEXT_TYPE)


def http_error(status: int) -> Response:
    """aiohttp's own error page text, e.g. `404: Not Found` for an unknown route."""
    return text(f"{status}: {_REASONS.get(status, 'Error')}", status)


def prompt_error(type_: str, message: str, details: str = "", status: int = 400) -> Response:
    """`POST /prompt`'s error body: `{"error": {type, message, details, extra_info},
    "node_errors": {}}`."""
    from services.comfy.validation import error

    return json({"error": error(type_, message, details), "node_errors": {}}, status)
