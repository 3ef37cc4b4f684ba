"""Participants' job API: submit, list, read and cancel their own jobs."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, HTTPException, Query, Response, status

from services.contracts import ROLE_LEVEL, Role
from services.queue.api.deps import Ctx
from services.queue.auth import Person, Principal
from services.queue.graph import GraphError, validate_workflow
from services.queue.models import Deleted, Job, JobWithWorkflow, SubmitRequest
from services.queue.store import (
    DailyLimit,
    JobFinished,
    JobIdTaken,
    JobLive,
    JobNotFound,
    QueueFull,
)

router = APIRouter(prefix="/api/jobs", tags=["jobs"])

#: Who may queue a job at the front (`front: true`), as an admin's bump would.
_FRONT_ROLES = frozenset({Role.ADMIN, Role.INSTRUCTOR})


@router.post("", status_code=status.HTTP_201_CREATED, response_model=Job)
async def submit_job(
    body: SubmitRequest, who: Person, ctx: Ctx
) -> Job:
    """Queue an API-format workflow for the caller (admins may name another user)."""
    try:
        validate_workflow(body.workflow)
    except GraphError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"invalid workflow: {exc}") from exc
    user, level = who.id, who.level
    if body.front and who.role not in _FRONT_ROLES:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "only admins and instructors may queue a job at the front (front: true)",
        )
    if body.user is not None and body.user != who.id:
        if not who.is_admin:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "only admins may submit for others")
        record = await ctx.auth.get_user(body.user)
        if record is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown user {body.user!r}")
        user, level = body.user, ROLE_LEVEL[record[1]]
    try:
        return await ctx.store.submit(
            user, level, body.workflow, body.client_id, body.extra_data, body.job_id,
            body.front,
        )
    except JobIdTaken as exc:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"job id {body.job_id!r} is taken: choose another"
        ) from exc
    except DailyLimit as exc:
        ctx.metrics.requests_rejected.labels("daily_limit").inc()
        wait_s = max(1, -(-exc.retry_after_ms // 1000))
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"{user} already submitted {exc.submitted} jobs today (daily limit {exc.limit}); "
            f"the limit resets at midnight UTC, in {wait_s // 3600} h {wait_s % 3600 // 60} min",
            headers={"Retry-After": str(wait_s)},
        ) from exc
    except QueueFull as exc:
        ctx.metrics.requests_rejected.labels("queued_limit").inc()
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"{user} already has {exc.queued} queued jobs (limit "
            f"{ctx.settings.max_queued_per_user}); wait for some to finish or cancel one",
        ) from exc


def _acting_for(who: Principal, user: str | None) -> str:
    """The user whose jobs an admin names with `?user=` (the gateway serves the admin in any
    participant's space); everyone else acts for themselves."""
    if user is None or user == who.id:
        return who.id
    if not who.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only admins may name another user")
    return user


@router.get("", response_model=list[JobWithWorkflow], response_model_exclude_none=True)
async def list_jobs(
    who: Person,
    ctx: Ctx,
    response: Response,
    state: Literal["live", "finished", "all"] = "all",
    limit: int = Query(default=50, ge=1, le=500),
    offset: int = Query(default=0, ge=0),
    workflow: bool = False,
    user: str | None = None,
) -> list[JobWithWorkflow]:
    """The caller's jobs (an admin: `user`'s, or everyone's): `live` = queued, leased and
    running, oldest first (ComfyUI's queue order); `finished` = history, newest first; `all`,
    newest first. `workflow=true` adds each job's workflow and extra_data. `X-Total-Count`
    says how many jobs are in that state in all."""
    owner = None if who.is_admin and user is None else _acting_for(who, user)
    jobs, total = await ctx.store.user_jobs(owner, state, limit, offset, workflow)
    response.headers["X-Total-Count"] = str(total)
    return jobs


@router.delete("", response_model=Deleted)
async def clear_history(
    who: Person, ctx: Ctx, state: Literal["finished"], user: str | None = None
) -> Deleted:
    """Delete the caller's (an admin: `user`'s) finished jobs; live ones stay."""
    return Deleted(deleted=await ctx.store.clear_history(_acting_for(who, user)))


@router.delete("/{job_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_job(job_id: str, who: Person, ctx: Ctx) -> None:
    """Delete a finished job from history (409 while it is live: cancel it instead)."""
    try:
        await ctx.store.delete_job(job_id, None if who.is_admin else who.id)
    except JobNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id!r}") from exc
    except JobLive as exc:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"job {job_id!r} is {exc.state}: cancel it first"
        ) from exc


@router.get("/{job_id}", response_model=JobWithWorkflow, response_model_exclude_none=True)
async def get_job(
    job_id: str, who: Person, ctx: Ctx, workflow: bool = False
) -> JobWithWorkflow:
    """One job; with ``?workflow=true`` also its workflow and extra_data."""
    job = await ctx.store.get(job_id, None if who.is_admin else who.id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id!r}")
    out = JobWithWorkflow(**job.model_dump())
    if workflow:
        out.workflow, out.extra_data = await ctx.store.get_payload(job_id)
    return out


@router.post("/{job_id}/cancel", response_model=Job)
async def cancel_job(job_id: str, who: Person, ctx: Ctx) -> Job:
    """A queued job is cancelled at once; a running one is stopped by its worker shortly."""
    try:
        await ctx.store.cancel(job_id, None if who.is_admin else who.id)
    except JobNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id!r}") from exc
    except JobFinished as exc:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"job {job_id!r} already ended ({exc.state})"
        ) from exc
    job = await ctx.store.get(job_id)
    if job is None:  # expired between the two calls
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id!r}")
    return job
