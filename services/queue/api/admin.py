"""Admin API: scheduling mode, users, worker tokens, every job and worker."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel

from services.contracts import LIVE_STATES, validate_user_id
from services.queue.api.deps import Ctx
from services.queue.auth import Admin, hash_password
from services.queue.context import QueueContext
from services.queue.models import (
    Job,
    ModeBody,
    UserBody,
    UserLimits,
    UserOut,
    UserUsage,
    WorkerInfo,
    WorkerTokenRequest,
    WorkerTokenResponse,
)

router = APIRouter(prefix="/api/admin", tags=["admin"])


class Overview(BaseModel):
    mode: str
    jobs: dict[str, int]
    finished: dict[str, int]
    workers_alive: int
    workers_lost: int
    paused: bool


@router.get("/overview", response_model=Overview)
async def overview(_: Admin, ctx: Ctx) -> Overview:
    live, totals = await ctx.store.counts()
    workers = await ctx.store.workers()
    return Overview(
        mode=await ctx.store.get_mode(),
        jobs={state: live.get(state, 0) for state in LIVE_STATES},
        finished=totals,
        workers_alive=sum(w.state == "alive" for w in workers),
        workers_lost=sum(w.state == "lost" for w in workers),
        paused=await ctx.store.is_paused(),
    )


@router.get("/mode", response_model=ModeBody)
async def get_mode(_: Admin, ctx: Ctx) -> ModeBody:
    return ModeBody(mode=await ctx.store.get_mode())


@router.put("/mode", response_model=ModeBody)
async def set_mode(body: ModeBody, _: Admin, ctx: Ctx) -> ModeBody:
    """Switch scheduling for every replica at once; takes effect at the next lease."""
    await ctx.store.set_mode(body.mode)
    return body


@router.get("/jobs", response_model=list[Job])
async def all_jobs(
    _: Admin,
    ctx: Ctx,
    user: str | None = None,
    limit: int = Query(default=100, ge=1, le=1000),
) -> list[Job]:
    return await ctx.store.list_jobs(user, limit)


@router.get("/workers", response_model=list[WorkerInfo])
async def workers(_: Admin, ctx: Ctx) -> list[WorkerInfo]:
    return await ctx.store.workers()


async def user_out(ctx: QueueContext, uid: str) -> UserOut:
    """One user as GET /api/admin/users lists them; 404 if there is none."""
    record = await ctx.auth.user_record(uid)
    if record is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown user {uid!r}")
    limits = (await ctx.store.limits()).get(uid, {})
    (usage,) = (await ctx.store.usage([uid])).values()
    return UserOut(
        id=uid, role=record.role, disabled=record.disabled,
        limits=UserLimits(**limits), usage=UserUsage(**usage),
    )


@router.get("/users", response_model=list[UserOut])
async def users(_: Admin, ctx: Ctx) -> list[UserOut]:
    """Every user with their role, whether disabled, limits and usage."""
    roles = sorted((await ctx.auth.list_users()).items())
    disabled = await ctx.auth.disabled_users()
    limits = await ctx.store.limits()
    usage = await ctx.store.usage([u for u, _ in roles])
    return [
        UserOut(
            id=u, role=r, disabled=u in disabled,
            limits=UserLimits(**limits.get(u, {})), usage=UserUsage(**usage[u]),
        )
        for u, r in roles
    ]


@router.put("/users/{uid}", response_model=UserOut)
async def put_user(uid: str, body: UserBody, _: Admin, ctx: Ctx) -> UserOut:
    """Create a user or reset their password and role."""
    try:
        if uid != "admin":  # the built-in admin (auth.py) keeps its reserved name
            validate_user_id(uid)
    except ValueError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
    await ctx.auth.set_user(uid, await asyncio.to_thread(hash_password, body.password), body.role)
    return await user_out(ctx, uid)


@router.delete("/users/{uid}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_user(uid: str, _: Admin, ctx: Ctx) -> None:
    if uid == "admin":
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "the admin user cannot be deleted")
    if not await ctx.auth.delete_user(uid):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown user {uid!r}")


@router.post("/worker-tokens", response_model=WorkerTokenResponse, status_code=201)
async def create_worker_token(
    body: WorkerTokenRequest, _: Admin, ctx: Ctx
) -> WorkerTokenResponse:
    """Issue a token for one worker host (replacing any earlier token of that name)."""
    return WorkerTokenResponse(name=body.name, token=await ctx.auth.create_worker_token(body.name))


@router.delete("/worker-tokens/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_worker_token(name: str, _: Admin, ctx: Ctx) -> None:
    if not await ctx.auth.revoke_worker_token(name):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no worker token named {name!r}")
