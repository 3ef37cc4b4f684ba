"""The organizer's cockpit (issue 12): pause and resume, the front lane, draining workers,
participants and their limits, statistics, cost, the backlog's ETA, credentials sheets and
pushed workflows. Admin only, like every /api/admin route; the one error shape."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import orjson
from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from services.contracts import EVERYONE, PUSH_WORKFLOW_MAX_BYTES, Role, validate_user_id
from services.queue.api.admin import user_out
from services.queue.api.deps import Ctx
from services.queue.auth import Admin, generate_password, hash_password
from services.queue.credentials_sheet import render_sheet
from services.queue.graph import GraphError, validate_canvas_workflow
from services.queue.models import (
    CreatedUser,
    CredentialsSheetRequest,
    Job,
    NewPassword,
    NewUser,
    PasswordOut,
    PushedTo,
    PushWorkflow,
    UserLimits,
    UserOut,
    WorkerInfo,
)
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


async def _drain(ctx: Ctx, worker_id: str, draining: bool) -> WorkerInfo:
    info = await ctx.store.set_draining(worker_id, draining)
    if info is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no worker {worker_id[:100]!r}")
    return info


# Worker ids may hold a slash (`name/instance`, as register hands them out): a path parameter.
@router.post("/workers/{worker_id:path}/drain", response_model=WorkerInfo)
async def drain(worker_id: str, _: Admin, ctx: Ctx) -> WorkerInfo:
    """The worker finishes the jobs it holds and leases nothing new; its lease and heartbeat
    answers say `drain: true` (it hears so within a heartbeat)."""
    return await _drain(ctx, worker_id, True)


@router.post("/workers/{worker_id:path}/undrain", response_model=WorkerInfo)
async def undrain(worker_id: str, _: Admin, ctx: Ctx) -> WorkerInfo:
    """Let a drained worker lease again."""
    return await _drain(ctx, worker_id, False)


# -- users ----------------------------------------------------------------------------------
@router.post("/users", response_model=CreatedUser, status_code=status.HTTP_201_CREATED)
async def add_user(body: NewUser, _: Admin, ctx: Ctx) -> CreatedUser:
    """Add a user (409 if one has that id); the password, generated if not given, is shown
    this once."""
    try:
        validate_user_id(body.id)
    except ValueError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
    password = body.password or generate_password()
    hashed = await asyncio.to_thread(hash_password, password)
    if not await ctx.auth.create_user(body.id, hashed, body.role):
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"user {body.id!r} exists: reset their password instead",
        )
    return CreatedUser(id=body.id, role=body.role, password=password)


@router.post("/users/{uid}/reset-password", response_model=PasswordOut)
async def reset_password(uid: str, body: NewPassword, _: Admin, ctx: Ctx) -> PasswordOut:
    """A new password (generated if not given, shown once); the user's sessions end."""
    password = body.password or generate_password()
    if not await ctx.auth.reset_password(uid, password):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown user {uid!r}")
    return PasswordOut(id=uid, password=password)


@router.post("/users/{uid}/disable", response_model=UserOut)
async def disable_user(uid: str, _: Admin, ctx: Ctx) -> UserOut:
    """The user cannot log in and their sessions end at once (409 for the last admin)."""
    if not await ctx.auth.set_disabled(uid, True):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown user {uid!r}")
    return await user_out(ctx, uid)


@router.post("/users/{uid}/enable", response_model=UserOut)
async def enable_user(uid: str, _: Admin, ctx: Ctx) -> UserOut:
    if not await ctx.auth.set_disabled(uid, False):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown user {uid!r}")
    return await user_out(ctx, uid)


@router.put("/users/{uid}/limits", response_model=UserOut)
async def set_limits(uid: str, body: UserLimits, _: Admin, ctx: Ctx) -> UserOut:
    """`running`: jobs at once (null: the queue's default), applied at once; `daily`: jobs
    submitted per UTC day (null: no limit), past it a submit is 429 until midnight UTC."""
    if await ctx.auth.user_record(uid) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown user {uid!r}")
    await ctx.store.set_limits(uid, body.running, body.daily)
    return await user_out(ctx, uid)


# -- the room at once ---------------------------------------------------------------------
@router.post("/push-workflow", response_model=PushedTo, status_code=status.HTTP_202_ACCEPTED)
async def push_workflow(body: PushWorkflow, _: Admin, ctx: Ctx) -> PushedTo:
    """Open a workflow on every participant's canvas (or one's): an exercise starts for the
    whole room at once. Accepted, not confirmed: a participant without ComfyUI open misses it."""
    if len(orjson.dumps(body.workflow)) > PUSH_WORKFLOW_MAX_BYTES:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"the workflow is larger than {PUSH_WORKFLOW_MAX_BYTES} bytes",
        )
    try:
        validate_canvas_workflow(body.workflow)
    except GraphError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"not a ComfyUI workflow: {exc}") from exc
    if body.user is not None and await ctx.auth.user_record(body.user) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown user {body.user!r}")
    sent_to = body.user or EVERYONE
    await ctx.store.push_workflow(sent_to, body.workflow)
    return PushedTo(sent_to=sent_to)


_T = TypeVar("_T")


async def _bounded(limit: int, calls: list[Awaitable[_T]]) -> list[_T]:
    """Await password hashes a few at a time (a coroutine starts only when awaited): each
    takes a core for tens of milliseconds, and logins must not starve while a sheet for 200
    people is made."""
    gate = asyncio.Semaphore(limit)

    async def one(call: Awaitable[_T]) -> _T:
        async with gate:
            return await call

    return list(await asyncio.gather(*(one(c) for c in calls)))


@router.post(
    "/credentials-sheet",
    response_class=HTMLResponse,
    responses={200: {"content": {"text/html": {}}, "description": "the printable sheet"}},
)
async def credentials_sheet(
    body: CredentialsSheetRequest, request: Request, _: Admin, ctx: Ctx
) -> HTMLResponse:
    """A printable page, one card per participant: their ComfyUI's address, user and password.
    The queue keeps only hashes, so each password is one passed (and checked) or, with
    `reset`, a new one (that user's password changes). Nothing changes unless all is well."""
    roles = await ctx.auth.list_users()
    users = (
        list(dict.fromkeys(body.users))
        if body.users is not None
        else sorted(u for u, r in roles.items() if r == Role.PARTICIPANT)
    )
    if unknown := [u for u in users if u not in roles]:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown users: {_names(unknown)}")
    given = {u: p for u, p in (body.passwords or {}).items() if u in users}
    missing = [u for u in users if u not in given]
    if missing and not body.reset:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            "the queue keeps only password hashes: pass passwords or reset "
            f"(no password for {_names(missing)})",
        )
    limit = ctx.settings.login_concurrency
    checked = await _bounded(limit, [ctx.auth.password_matches(u, p) for u, p in given.items()])
    if wrong := [u for u, ok in zip(given, checked, strict=True) if not ok]:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            f"not the current password of {_names(wrong)}: pass the current ones or reset",
        )
    new = {u: generate_password() for u in missing}
    await _bounded(limit, [ctx.auth.reset_password(u, p) for u, p in new.items()])
    public_url = ctx.settings.public_url or str(request.base_url)
    sheet = render_sheet(public_url, {u: given.get(u) or new[u] for u in users})
    return HTMLResponse(sheet, headers={"Cache-Control": "no-store"})


def _names(users: list[str], shown: int = 10) -> str:
    more = f" and {len(users) - shown} more" if len(users) > shown else ""
    return ", ".join(users[:shown]) + more
