"""The organizer's cockpit (issue 12): pause and resume, the front lane, draining workers,
participants and their limits, statistics, cost, the backlog's ETA, credentials sheets and
pushed workflows. Admin only, like every /api/admin route; the one error shape."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from services.queue.api.deps import Ctx
from services.queue.auth import Admin

router = APIRouter(prefix="/api/admin", tags=["admin"])


class Paused(BaseModel):
    paused: bool


@router.post("/queue/pause", response_model=Paused)
async def pause(_: Admin, ctx: Ctx) -> Paused:
    """Lease nothing until resumed (submits are still accepted; running jobs go on)."""
    await ctx.store.set_paused(True)
    return Paused(paused=True)


@router.post("/queue/resume", response_model=Paused)
async def resume(_: Admin, ctx: Ctx) -> Paused:
    """Lease again: every waiting worker looks at once."""
    await ctx.store.set_paused(False)
    return Paused(paused=False)
