"""Error bodies shared by FastAPI's handlers and the hot path, so a client sees one shape:
``{"detail": "<what was wrong>"}``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from starlette import status

from services.queue.limits import NOT_JSON

STORAGE_DOWN = "queue storage unavailable, try again"
INTERNAL = "internal error in the queue service (logged)"


def validation_error(errors: Iterable[Any]) -> tuple[int, str]:
    """(status, message) for pydantic errors: 400 when the body is not JSON at all,
    else 422 naming each bad field."""
    parts = []
    for err in errors:
        if err.get("type") == "json_invalid":
            return status.HTTP_400_BAD_REQUEST, NOT_JSON
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where or 'body'}: {err.get('msg')}")
    return status.HTTP_422_UNPROCESSABLE_CONTENT, "; ".join(parts) or "invalid request"
