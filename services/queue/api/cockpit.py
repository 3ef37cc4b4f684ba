"""The organizer's cockpit (issue 12): pause and resume, the front lane, draining workers,
participants and their limits, statistics, cost, the backlog's ETA, credentials sheets and
pushed workflows. Admin only, like every /api/admin route; the one error shape."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel

from services.queue.api.deps import Ctx
from services.queue.auth import Admin
from services.queue.models import Job
from services.queue.store import JobNotFound, JobNotQueued

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


@router.post("/jobs/{job_id}/bump", response_model=Job)
async def bump(job_id: str, _: Admin, ctx: Ctx) -> Job:
    """Put a queued job before every other queued job, whatever the mode (the newest bump
    goes first); 409 unless it is queued."""
    try:
        await ctx.store.bump(job_id)
    except JobNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id!r}") from exc
    except JobNotQueued as exc:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"job {job_id!r} is {exc.state}: only a queued job can be bumped",
        ) from exc
    job = await ctx.store.get(job_id)
    if job is None:  # expired between the two calls
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id!r}")
    return job
