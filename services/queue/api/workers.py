"""The worker protocol: workers are remote, speak only this HTTP API, and never see Redis."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterator
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Response, status
from pydantic import BaseModel, Field

from services.queue.api.deps import Ctx
from services.queue.auth import Principal, Worker
from services.queue.context import QueueContext
from services.queue.models import (
    CancelFlag,
    CompleteRequest,
    DeclineRequest,
    FailRequest,
    Finished,
    HeartbeatRequest,
    HeartbeatResponse,
    LeaseRef,
    LeaseRequest,
    LeaseResponse,
    ProgressRequest,
    RelayRequest,
    StateResponse,
    WorkerRef,
    WorkerRegistration,
)
from services.queue.store import Claim, JobNotFound, LeaseLost

router = APIRouter(prefix="/api/worker", tags=["worker"])


#: An idle worker whose long-poll ended stays marked idle this much longer: it is about to
#: poll again, and meanwhile no busy worker may prefetch the job it would get.
IDLE_GRACE_MS = 2000


class RegisterResponse(BaseModel):
    worker_id: str
    lease_ttl_s: float
    lease_wait_max_s: float
    catalog_wanted: bool = Field(
        description="the queue has no catalogue under this catalog_hash: PUT it "
        "(/api/worker/catalog/{catalog_hash})"
    )


class Released(BaseModel):
    released: int


#: What register hands out after the token's name: "/<instance>" (as WorkerRegistration).
_INSTANCE_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _own_worker_id(who: Principal, worker_id: str) -> str:
    """A token named N may act as worker N or N/<instance> (instance as register accepts
    it), nothing else: no path tricks, newlines or 100 KB ids."""
    if worker_id != who.id:
        name, slash, instance = worker_id.partition("/")
        if name != who.id or not slash or not _INSTANCE_RE.fullmatch(instance):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"this token belongs to worker {who.id!r}, not {worker_id[:100]!r}",
            )
    return worker_id


async def _registered_worker_id(ctx: QueueContext, who: Principal, worker_id: str) -> str:
    """As _own_worker_id, and registered: lease and heartbeat must not create entries for
    workers that never registered (they would live for a day)."""
    _own_worker_id(who, worker_id)
    if not await ctx.store.worker_registered(worker_id):
        raise _not_registered(worker_id)
    return worker_id


def _not_registered(worker_id: str) -> HTTPException:
    return HTTPException(
        status.HTTP_403_FORBIDDEN,
        f"worker {worker_id!r} is not registered: POST /api/worker/register first",
    )


@contextlib.contextmanager
def _held_lease(job_id: str) -> Iterator[None]:
    """Turn a lost lease (expired, released, or the job ended) into the 409 workers expect."""
    try:
        yield
    except (LeaseLost, JobNotFound) as exc:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"lease lost for job {job_id!r}: it expired, was released or the job ended; "
            "drop this job's result",
        ) from exc


def _lease_response(claim: Claim, lease_ttl_s: float) -> Response:
    """Serialize once: the workflow goes to the worker exactly as stored, unparsed."""
    body: dict[str, Any] = {"cancel": claim.cancel}
    if claim.drain:
        body["drain"] = True
    if claim.job is not None:
        body["lease"] = {
            "job": claim.job.model_dump(),
            "lease_id": claim.lease_id,
            "lease_ttl_s": lease_ttl_s,
            "workflow": orjson.Fragment(claim.workflow_json),
            "extra_data": orjson.Fragment(claim.extra_data_json or b"null"),
        }
    return Response(orjson.dumps(body), media_type="application/json")


@router.post("/register", response_model=RegisterResponse)
async def register(body: WorkerRegistration, who: Worker, ctx: Ctx) -> RegisterResponse:
    worker_id = who.id + (f"/{body.instance}" if body.instance else "")
    await ctx.store.register_worker(worker_id, body.model_dump(exclude={"instance"}))
    wanted = body.catalog_hash is not None and not await ctx.store.has_catalog(body.catalog_hash)
    return RegisterResponse(
        worker_id=worker_id,
        lease_ttl_s=ctx.settings.lease_ttl_s,
        lease_wait_max_s=ctx.settings.lease_wait_max_s,
        catalog_wanted=wanted,
    )


@router.post("/lease", response_model=LeaseResponse)
async def lease(body: LeaseRequest, who: Worker, ctx: Ctx) -> Response:
    """Long-poll: answer at once with a job if one is ready, else when one becomes ready,
    else with no job after `wait_s` (capped by the server). `cancel` lists held jobs whose
    owner cancelled them; with any, the call answers at once. With `complete`, the finished
    job is recorded first; if that is refused (409), no new lease is taken.

    `prefetch`: the worker is busy and wants a job to queue behind its running one. That is
    refused while any worker (on any replica) waits in an idle long-poll; an idle worker that
    waits is marked so in Redis for the rest of its wait (see `lease_next` in lua/lib.lua)."""
    worker_id = await _registered_worker_id(ctx, who, body.worker_id)
    finished = body.complete
    prefetch = body.prefetch
    waiters = ctx.hub.waiters
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(body.wait_s, ctx.settings.lease_wait_max_s)
    woken = False
    while True:
        # Register as a waiter before looking: a job queued in between still wakes us.
        wake = waiters.add(prefetch)
        remaining_ms = int((deadline - loop.time()) * 1000)
        idle_ms = remaining_ms + IDLE_GRACE_MS if remaining_ms > 0 and not prefetch else 0
        try:
            if finished is not None:
                claim = await _complete_and_claim(ctx, worker_id, finished, prefetch, idle_ms)
                finished = None
            else:
                claim = await ctx.store.claim(worker_id, prefetch, idle_ms)
        except BaseException:
            waiters.discard(wake)
            raise
        if claim.released:  # it left while this poll waited (its client gave up on it)
            waiters.discard(wake)
            if woken:
                waiters.wake(1)  # the job that woke us is for someone else
            raise _not_registered(worker_id)
        if claim.job is not None:
            waiters.discard(wake)
            assert claim.job.leased_at is not None
            wait_ms = claim.job.leased_at - claim.job.queued_at
            ctx.metrics.queue_wait.observe(max(0, wait_ms) / 1000)
            return _lease_response(claim, ctx.settings.lease_ttl_s)
        remaining = deadline - loop.time()
        if claim.cancel or claim.drain or remaining <= 0:
            waiters.discard(wake)
            return _lease_response(claim, ctx.settings.lease_ttl_s)
        try:
            await asyncio.wait_for(wake, remaining)
            woken = True
        except TimeoutError:
            waiters.discard(wake)
            return _lease_response(claim, ctx.settings.lease_ttl_s)
        except BaseException:
            waiters.discard(wake)
            raise


@router.post("/heartbeat", response_model=HeartbeatResponse, response_model_exclude_none=True)
async def heartbeat(body: HeartbeatRequest, who: Worker, ctx: Ctx) -> HeartbeatResponse:
    """Renew the worker's liveness and the leases it still holds; `cancel` lists every held
    job whose owner cancelled it. With `wait_s`, a long-poll: the answer comes when a held
    job not in `cancelling` is cancelled (leases renewed again then), or after `wait_s`."""
    worker_id = await _registered_worker_id(ctx, who, body.worker_id)
    leases = [(h.job_id, h.lease_id) for h in body.leases]
    if body.status is not None:
        await ctx.store.set_worker_status(worker_id, body.status.model_dump())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + body.wait_s
    known = set(body.cancelling)
    first = True
    drain_before = None
    while True:
        # Watch before looking: a cancel requested in between still wakes us.
        news = ctx.hub.cancel_requested()
        cancel, lost, drain = await ctx.store.heartbeat(worker_id, leases)
        drain_before = drain if drain_before is None else drain_before
        remaining = deadline - loop.time()
        news_now = not known.issuperset(cancel) or (lost and first) or drain != drain_before
        if news_now or remaining <= 0:
            news.cancel()
            return HeartbeatResponse(cancel=cancel, lost=lost, drain=drain or None)
        first = False  # later, a listed lease may have ended meanwhile: not news
        try:
            await asyncio.wait_for(news, remaining)
        except TimeoutError:
            return HeartbeatResponse(cancel=cancel, lost=[], drain=drain or None)


@router.post("/jobs/{job_id}/start", response_model=CancelFlag)
async def start(job_id: str, body: LeaseRef, who: Worker, ctx: Ctx) -> CancelFlag:
    _own_worker_id(who, body.worker_id)
    with _held_lease(job_id):
        return CancelFlag(cancel=await ctx.store.start(job_id, body.lease_id))


@router.post("/jobs/{job_id}/progress", response_model=CancelFlag)
async def progress(job_id: str, body: ProgressRequest, who: Worker, ctx: Ctx) -> CancelFlag:
    _own_worker_id(who, body.worker_id)
    step = body.model_dump(include={"value", "max", "node", "data"}, exclude_none=True)
    with _held_lease(job_id):
        return CancelFlag(cancel=await ctx.store.progress(job_id, body.lease_id, step))


@router.post("/jobs/{job_id}/complete", status_code=status.HTTP_204_NO_CONTENT)
async def complete(job_id: str, body: CompleteRequest, who: Worker, ctx: Ctx) -> None:
    """Record the outputs. Refused (409) unless the caller still holds the lease, so a job
    never has two results."""
    _own_worker_id(who, body.worker_id)
    with _held_lease(job_id):
        done = await ctx.store.complete(
            job_id, body.lease_id, body.outputs, body.gpu_ms, body.history
        )
    ctx.metrics.observe_completion(done)


async def _complete_and_claim(
    ctx: QueueContext, worker_id: str, finished: Finished, prefetch: bool, idle_ms: int
) -> Claim:
    with _held_lease(finished.job_id):
        done, claim = await ctx.store.complete_and_claim(
            finished.job_id, finished.lease_id, finished.outputs, worker_id,
            finished.gpu_ms, finished.history, prefetch, idle_ms,
        )  # fmt: skip
    ctx.metrics.observe_completion(done)
    return claim


@router.post("/jobs/{job_id}/fail", response_model=StateResponse)
async def fail(job_id: str, body: FailRequest, who: Worker, ctx: Ctx) -> StateResponse:
    _own_worker_id(who, body.worker_id)
    with _held_lease(job_id):
        state = await ctx.store.fail(
            job_id, body.lease_id, body.error, body.retry, body.gpu_ms, body.history
        )
    return StateResponse(state=state)


#: The ComfyUI message whose data becomes the job's `progress` field.
_PROGRESS = "progress"


@router.post("/jobs/{job_id}/events", response_model=CancelFlag)
async def relay(job_id: str, body: RelayRequest, who: Worker, ctx: Ctx) -> CancelFlag:
    """ComfyUI's messages about the job, in the order ComfyUI sent them: one `comfy` event
    each, data `{"type", "data", "client_id"}`. Renews the lease; `execution_start` marks the
    job running, a `progress` message sets its progress. `cancel`: interrupt it."""
    _own_worker_id(who, body.worker_id)
    encoded = [orjson.dumps({"type": m.type, "data": m.data}) for m in body.messages]
    steps = [m.data for m in body.messages if m.type == _PROGRESS]
    progress = (
        {k: steps[-1].get(k) for k in ("value", "max", "node") if k in steps[-1]}
        if steps
        else None
    )
    start = any(m.type == "execution_start" for m in body.messages)
    with _held_lease(job_id):
        cancel = await ctx.store.relay(job_id, body.lease_id, encoded, progress, start)
    return CancelFlag(cancel=cancel)


@router.post("/jobs/{job_id}/release", response_model=StateResponse)
async def release_job(job_id: str, body: LeaseRef, who: Worker, ctx: Ctx) -> StateResponse:
    """Give one job back without spending its attempt (a prefetched job at shutdown, a running
    one whose shutdown grace ran out): it goes to the head of its owner's queue."""
    _own_worker_id(who, body.worker_id)
    with _held_lease(job_id):
        return StateResponse(state=await ctx.store.release_job(job_id, body.lease_id))


@router.post("/jobs/{job_id}/decline", response_model=StateResponse)
async def decline(job_id: str, body: DeclineRequest, who: Worker, ctx: Ctx) -> StateResponse:
    """This worker lacks a model or node the graph needs: the job goes back for another
    worker without spending an attempt and is never offered to this one again; if no live
    worker is left that has not declined it, it fails with `error`."""
    _own_worker_id(who, body.worker_id)
    with _held_lease(job_id):
        return StateResponse(state=await ctx.store.decline(job_id, body.lease_id, body.error))


@router.post("/release", response_model=Released)
async def release(body: WorkerRef, who: Worker, ctx: Ctx) -> Released:
    """A clean shutdown: the worker's jobs go back to their queues at once."""
    worker_id = await _registered_worker_id(ctx, who, body.worker_id)
    return Released(released=await ctx.store.release(worker_id))
