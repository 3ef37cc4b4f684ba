"""The worker protocol: workers are remote, speak only this HTTP API, and never see Redis."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel

from services.queue.api.deps import Hub, Metrics, Settings, Store
from services.queue.auth import Principal, Worker
from services.queue.models import (
    CancelFlag,
    CompleteRequest,
    FailRequest,
    HeartbeatRequest,
    HeartbeatResponse,
    LeasedJob,
    LeaseRef,
    LeaseRequest,
    ProgressRequest,
    WorkerRef,
    WorkerRegistration,
)
from services.queue.store import JobNotFound, JobStore, LeaseLost

router = APIRouter(prefix="/api/worker", tags=["worker"])


class RegisterResponse(BaseModel):
    worker_id: str
    lease_ttl_s: float
    lease_wait_max_s: float


class LeaseResponse(BaseModel):
    lease: LeasedJob | None = None
    cancel: list[str] = []


class Released(BaseModel):
    released: int


def _own_worker_id(who: Principal, worker_id: str) -> str:
    """A token named N may act as worker N or N/<instance>, nothing else."""
    if worker_id != who.id and not worker_id.startswith(who.id + "/"):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"this token belongs to worker {who.id!r}, not {worker_id!r}"
        )
    return worker_id


def _lease_lost(job_id: str) -> HTTPException:
    return HTTPException(
        status.HTTP_409_CONFLICT,
        f"lease lost for job {job_id!r}: it expired, was released or the job ended; "
        "drop this job's result",
    )


async def _cancel_flags(store: JobStore, worker_id: str) -> list[str]:
    held = await store.worker_jobs(worker_id)
    if not held:
        return []
    flags = [await store.redis.hget(store.key("job", j), "cancel_requested") for j in held]
    return sorted(j for j, f in zip(held, flags, strict=True) if f == b"1")


@router.post("/register", response_model=RegisterResponse)
async def register(
    body: WorkerRegistration, who: Worker, store: Store, settings: Settings
) -> RegisterResponse:
    worker_id = who.id + (f"/{body.instance}" if body.instance else "")
    await store.register_worker(worker_id, body.model_dump(exclude={"instance"}))
    return RegisterResponse(
        worker_id=worker_id,
        lease_ttl_s=settings.lease_ttl_s,
        lease_wait_max_s=settings.lease_wait_max_s,
    )


@router.post("/lease", response_model=LeaseResponse, response_model_exclude_none=True)
async def lease(
    body: LeaseRequest, who: Worker, store: Store, hub: Hub, settings: Settings, metrics: Metrics
) -> LeaseResponse:
    """Long-poll: answer at once with a job if one is ready, else when one becomes ready,
    else with no job after `wait_s` (capped by the server)."""
    worker_id = _own_worker_id(who, body.worker_id)
    cancel = await _cancel_flags(store, worker_id)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(body.wait_s, settings.lease_wait_max_s)
    while True:
        wake = hub.waiters.add()
        try:
            job = await store.claim(worker_id)
        except BaseException:
            hub.waiters.discard(wake)
            raise
        if job is not None:
            hub.waiters.discard(wake)
            assert job.job.leased_at is not None
            metrics.queue_wait.observe(max(0, job.job.leased_at - job.job.queued_at) / 1000)
            return LeaseResponse(lease=job, cancel=cancel)
        remaining = deadline - loop.time()
        if cancel or remaining <= 0:
            hub.waiters.discard(wake)
            return LeaseResponse(cancel=cancel)
        try:
            await asyncio.wait_for(wake, remaining)
        except TimeoutError:
            hub.waiters.discard(wake)
            return LeaseResponse(cancel=cancel)
        except BaseException:
            hub.waiters.discard(wake)
            raise


@router.post("/heartbeat", response_model=HeartbeatResponse)
async def heartbeat(body: HeartbeatRequest, who: Worker, store: Store) -> HeartbeatResponse:
    """Renew the worker's liveness and the leases it still holds."""
    worker_id = _own_worker_id(who, body.worker_id)
    cancel, lost = await store.heartbeat(worker_id, [(h.job_id, h.lease_id) for h in body.leases])
    return HeartbeatResponse(cancel=cancel, lost=lost)


@router.post("/jobs/{job_id}/start", response_model=CancelFlag)
async def start(job_id: str, body: LeaseRef, who: Worker, store: Store) -> CancelFlag:
    _own_worker_id(who, body.worker_id)
    try:
        return CancelFlag(cancel=await store.start(job_id, body.lease_id))
    except (LeaseLost, JobNotFound) as exc:
        raise _lease_lost(job_id) from exc


@router.post("/jobs/{job_id}/progress", response_model=CancelFlag)
async def progress(job_id: str, body: ProgressRequest, who: Worker, store: Store) -> CancelFlag:
    _own_worker_id(who, body.worker_id)
    step = body.model_dump(include={"value", "max", "node", "data"}, exclude_none=True)
    try:
        return CancelFlag(cancel=await store.progress(job_id, body.lease_id, step))
    except (LeaseLost, JobNotFound) as exc:
        raise _lease_lost(job_id) from exc


@router.post("/jobs/{job_id}/complete", status_code=status.HTTP_204_NO_CONTENT)
async def complete(
    job_id: str, body: CompleteRequest, who: Worker, store: Store, metrics: Metrics
) -> None:
    """Record the outputs. Refused (409) unless the caller still holds the lease, so a job
    never has two results."""
    _own_worker_id(who, body.worker_id)
    try:
        done = await store.complete(job_id, body.lease_id, body.outputs)
    except (LeaseLost, JobNotFound) as exc:
        raise _lease_lost(job_id) from exc
    metrics.observe_completion(done)


class FailResponse(BaseModel):
    state: str


@router.post("/jobs/{job_id}/fail", response_model=FailResponse)
async def fail(job_id: str, body: FailRequest, who: Worker, store: Store) -> FailResponse:
    _own_worker_id(who, body.worker_id)
    try:
        return FailResponse(state=await store.fail(job_id, body.lease_id, body.error, body.retry))
    except (LeaseLost, JobNotFound) as exc:
        raise _lease_lost(job_id) from exc


@router.post("/release", response_model=Released)
async def release(body: WorkerRef, who: Worker, store: Store) -> Released:
    """A clean shutdown: the worker's jobs go back to their queues at once."""
    return Released(released=await store.release(_own_worker_id(who, body.worker_id)))
