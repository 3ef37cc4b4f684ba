"""The one request dependency for the app's shared parts (a single lookup per request)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.queue.context import QueueContext


async def _context(request: Request) -> QueueContext:
    return request.app.state.ctx  # type: ignore[no-any-return]


Ctx = Annotated[QueueContext, Depends(_context)]
