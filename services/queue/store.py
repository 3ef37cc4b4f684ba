"""The job store: every queue operation as one call into Redis (a Lua script or one read).

The HTTP layer never touches Redis keys itself; it calls these methods, so the data model
lives in two places only: the Lua scripts and this module.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import zlib
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from services.contracts import LIVE_STATES, EventType, JobState, Mode
from services.queue import stats
from services.queue.models import Job, JobWithWorkflow, WorkerInfo
from services.queue.scripts import Scripts
from services.queue.settings import QueueSettings

#: A worker silent for this long is dropped from the worker list altogether.
_FORGET_WORKER_MS = 24 * 3600 * 1000

#: Workflows above this size are compressed off the event loop.
_OFFLOAD_BYTES = 256 * 1024


class LeaseLost(Exception):
    """The caller no longer holds the job's lease (it expired, was released or cancelled)."""


class JobNotFound(Exception):
    """No such job, or not one the caller may see."""


class QueueFull(Exception):
    """The user already has as many queued jobs as allowed."""

    def __init__(self, queued: int) -> None:
        super().__init__(queued)
        self.queued = queued


class DailyLimit(Exception):
    """The user submitted their daily limit of jobs; it resets at the next UTC midnight."""

    def __init__(self, submitted: int, limit: int, retry_after_ms: int) -> None:
        super().__init__(submitted, limit, retry_after_ms)
        self.submitted, self.limit, self.retry_after_ms = submitted, limit, retry_after_ms


class JobIdTaken(Exception):
    """The queue still holds a job with the id the client chose."""


class JobLive(Exception):
    """The job is still queued or running: it can be cancelled, not deleted."""

    def __init__(self, state: str) -> None:
        super().__init__(state)
        self.state = state


class JobNotQueued(Exception):
    """Only a queued job can be bumped; this one is in `state`."""

    def __init__(self, state: str) -> None:
        super().__init__(state)
        self.state = state


class JobFinished(Exception):
    """The job already ended; there is nothing to cancel."""

    def __init__(self, state: str) -> None:
        super().__init__(state)
        self.state = state


@dataclass(frozen=True)
class Claim:
    """A lease call's outcome. The workflow stays serialized: it goes to the worker as is."""

    cancel: list[str]
    drain: bool = False
    #: The worker released (left): it is leased nothing until it registers again.
    released: bool = False
    job: Job | None = None
    lease_id: str = ""
    workflow_json: bytes = b""
    extra_data_json: bytes | None = None


@dataclass(frozen=True)
class Completion:
    """Timestamps of a finished job, for the wait and run-time histograms."""

    queued_at: int
    leased_at: int
    started_at: int | None
    finished_at: int


def new_id() -> str:
    """A job or lease id: 128 random bits as 32 hex digits, the shape of ``uuid4().hex``
    at a third of its cost."""
    return secrets.token_hex(16)


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _decode_hash(raw: dict[bytes, bytes] | list[bytes]) -> dict[str, str]:
    if isinstance(raw, list):
        raw = dict(zip(raw[::2], raw[1::2], strict=True))
    return {k.decode(): v.decode() for k, v in raw.items()}


async def _compress(raw: bytes) -> bytes:
    """Fast zlib; large documents are compressed off the event loop."""
    if len(raw) > _OFFLOAD_BYTES:
        return await asyncio.to_thread(zlib.compress, raw, 1)
    return zlib.compress(raw, 1)


def decode_json_blob(blob: bytes) -> dict[str, Any]:
    """Undo `_compress(orjson.dumps(...))`: how workflows and extra_data are stored."""
    return orjson.loads(zlib.decompress(blob))


def _json_or_none(value: str | None) -> Any:
    return orjson.loads(value) if value else None


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value else None


def _optional(value: Any) -> bytes | str:
    """An optional script argument: JSON (a number for ints), or '' for none."""
    if value is None:
        return ""
    return str(value) if isinstance(value, int) else orjson.dumps(value)


def job_from_hash(fields: dict[str, str], position: int | None = None) -> Job:
    """Turn a job hash into the API's job record."""
    meta = _json_or_none(fields.get("meta")) or {}
    return Job(
        id=fields["id"],
        user=fields["user"],
        state=JobState(fields["state"]),
        number=_int_or_none(fields.get("seq")),
        priority=int(fields["level"]),
        attempt=int(fields.get("attempt", 0)),
        queued_at=int(fields["queued_at"]),
        leased_at=_int_or_none(fields.get("leased_at")),
        started_at=_int_or_none(fields.get("started_at")),
        finished_at=_int_or_none(fields.get("finished_at")),
        worker=fields.get("worker") or None,
        error=_json_or_none(fields.get("error")),
        outputs=_json_or_none(fields.get("outputs")),
        progress=_json_or_none(fields.get("progress")),
        cancel_requested=fields.get("cancel_requested") == "1",
        position=position if fields["state"] == JobState.QUEUED else None,
        client_id=meta.get("client_id"),
        gpu_ms=_int_or_none(fields.get("gpu_ms")),
        history=_json_or_none(fields.get("comfy_history")),
    )


def _claim(result: list[Any], lease_id: str) -> Claim:
    """Parse claim's reply: {cancel}, {cancel, 'drain' | 'released'}, or {cancel, job hash,
    workflow, extra_data}."""
    cancel = sorted(_text(c) or "" for c in result[0])
    if len(result) <= 2:  # nothing leased
        why = _text(result[1]) if len(result) == 2 else None
        return Claim(cancel=cancel, drain=why == "drain", released=why == "released")
    return Claim(
        cancel=cancel,
        job=job_from_hash(_decode_hash(result[1])),
        lease_id=lease_id,
        workflow_json=zlib.decompress(result[2]),
        extra_data_json=zlib.decompress(result[3]) if result[3] else None,
    )


class JobStore:
    """Atomic job-queue operations over one Redis connection pool."""

    def __init__(self, redis: Redis, settings: QueueSettings) -> None:
        self.redis = redis
        self.settings = settings
        self.prefix = settings.key_prefix
        self.scripts = Scripts(redis, self.prefix)
        self._lease_ms = int(settings.lease_ttl_s * 1000)
        self._registered: dict[str, float] = {}

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    # -- participants -------------------------------------------------------------------
    async def submit(
        self,
        user: str,
        level: int,
        workflow: dict[str, Any],
        client_id: str | None = None,
        extra_data: dict[str, Any] | None = None,
        job_id: str | None = None,
        front: bool = False,
    ) -> Job:
        """Queue a workflow (`front`: at the head of the front lane); raise QueueFull past
        the user's queued-job limit, JobIdTaken if the chosen `job_id` belongs to a job the
        queue still holds."""
        workflow_blob = await _compress(orjson.dumps(workflow))
        extra_blob = await _compress(orjson.dumps(extra_data)) if extra_data else b""
        job_id = job_id or new_id()
        s = self.settings
        status, *reply = await self.scripts.submit(
            job_id=job_id, user=user, level=level, max_queued=s.max_queued_per_user,
            running_limit=s.max_running_per_user, workflow=workflow_blob,
            meta=orjson.dumps({"client_id": client_id}), events_maxlen=s.events_maxlen,
            extra_data=extra_blob, default_mode=s.mode, front=int(front),
        )
        if _text(status) == "taken":
            raise JobIdTaken(job_id)
        if _text(status) == "limit":
            raise QueueFull(int(reply[0]))
        if _text(status) == "daily":
            raise DailyLimit(int(reply[0]), int(reply[1]), int(reply[2]))
        value, queued_at, position = reply
        return Job(
            id=job_id, user=user, state=JobState.QUEUED, number=int(value), priority=level,
            attempt=0, queued_at=int(queued_at), position=int(position), client_id=client_id,
        )

    async def get(self, job_id: str, user: str | None = None) -> Job | None:
        """One job (with its queue position), or None; `user` restricts to that owner."""
        raw = await self.redis.hgetall(self.key("job", job_id))
        if not raw:
            return None
        fields = _decode_hash(raw)
        if user is not None and fields["user"] != user:
            return None
        position = None
        if fields["state"] == JobState.QUEUED:
            (position,) = await self.positions([job_id])
        return job_from_hash(fields, position)

    async def get_payload(
        self, job_id: str
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The job's workflow and extra_data (kept apart from the record: they can be large)."""
        workflow, extra = await self.redis.mget(self.key("wf", job_id), self.key("xd", job_id))
        return (
            decode_json_blob(workflow) if workflow else None,
            decode_json_blob(extra) if extra else None,
        )

    async def list_jobs(self, user: str | None, limit: int = 50) -> list[Job]:
        """Most recent jobs first: one user's history, or everyone's for an admin."""
        index = self.key("ujobs", user) if user else self.key("alljobs")
        ids = [_text(i) for i in await self.redis.zrevrange(index, 0, limit - 1)]
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hgetall(self.key("job", job_id))
            raws = await pipe.execute()
        found = [(i, _decode_hash(r)) for i, r in zip(ids, raws, strict=True) if r]
        gone = [i for i, r in zip(ids, raws, strict=True) if not r]
        if gone:  # expired records: drop them from the index lazily
            await self.redis.zrem(index, *gone)
        queued = [i for i, f in found if f["state"] == JobState.QUEUED]
        positions = dict(zip(queued, await self.positions(queued), strict=True))
        return [job_from_hash(f, positions.get(i)) for i, f in found]

    async def user_jobs(
        self,
        user: str | None,
        state: str,
        limit: int,
        offset: int = 0,
        workflow: bool = False,
    ) -> tuple[list[JobWithWorkflow], int]:
        """A user's jobs by `state`: `live` (queued, leased, running; oldest first, the queue's
        order), `finished` (history, newest first) or `all` (newest first); `user` None means
        everyone's (admins). Returns one page and the number of jobs in that state.

        A user's index holds at most history_per_user finished jobs plus their live ones, so
        one pass over it is bounded; everyone's live jobs come from the queue's own sets."""
        if user is None and state == "live":
            pending = await self.redis.zrange(self.key("pending"), 0, -1)
            leased = await self.redis.zrange(self.key("leases"), 0, -1)
            ids = [_text(i) or "" for i in (*leased, *pending)]
        else:
            index = self.key("ujobs", user) if user else self.key("alljobs")
            ids = [_text(i) or "" for i in await self.redis.zrange(index, 0, -1)]
        fields = await self._hashes(ids)
        found = [f for f in fields if f]
        live = {s.value for s in LIVE_STATES}
        if state == "live":
            chosen = sorted((f for f in found if f["state"] in live), key=lambda f: int(f["seq"]))
        else:
            chosen = [f for f in reversed(found) if state == "all" or f["state"] not in live]
        page = chosen[offset : offset + limit]
        queued = [f["id"] for f in page if f["state"] == JobState.QUEUED]
        positions = dict(zip(queued, await self.positions(queued), strict=True))
        jobs = [
            JobWithWorkflow(**job_from_hash(f, positions.get(f["id"])).model_dump())
            for f in page
        ]
        if workflow and jobs:
            keys = [self.key(kind, j.id) for j in jobs for kind in ("wf", "xd")]
            blobs = await self.redis.mget(keys)
            for i, job in enumerate(jobs):
                wf, xd = blobs[2 * i], blobs[2 * i + 1]
                job.workflow = decode_json_blob(wf) if wf else None
                job.extra_data = decode_json_blob(xd) if xd else None
        return jobs, len(chosen)

    async def _hashes(self, ids: list[str]) -> list[dict[str, str]]:
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hgetall(self.key("job", job_id))
            raws = await pipe.execute()
        return [_decode_hash(r) if r else {} for r in raws]

    async def delete_job(self, job_id: str, requester: str | None) -> None:
        """Delete a finished job from history; `requester` None means an admin."""
        status, *rest = await self.scripts.delete_job(job_id=job_id, requester=requester or "")
        status = _text(status)
        if status == "not_found":
            raise JobNotFound(job_id)
        if status == "live":
            raise JobLive(_text(rest[0]) or "")

    async def clear_history(self, user: str) -> int:
        """Delete every finished job of `user`; returns how many."""
        return int(await self.scripts.clear_history(user=user))

    async def mean_run_s(self, sample: int = 50) -> float | None:
        """Mean run time of the most recent succeeded jobs (the queue's own clock)."""
        newest = await self.redis.zrevrange(self.key("alljobs"), 0, sample - 1)
        ids = [_text(i) or "" for i in newest]
        if not ids:
            return None
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(self.key("job", job_id), "state", "started_at", "finished_at")
            rows = await pipe.execute()
        runs = [
            (int(end) - int(start)) / 1000
            for state, start, end in rows
            if _text(state) == JobState.SUCCEEDED and start and end
        ]
        return sum(runs) / len(runs) if runs else None

    async def positions(self, job_ids: list[str]) -> list[int]:
        if not job_ids:
            return []
        raw = await self.scripts.position(
            default_mode=self.settings.mode, job_ids=orjson.dumps(job_ids)
        )
        return [int(p) for p in raw]

    async def bump(self, job_id: str) -> None:
        """Put a queued job at the head of the front lane (claimed before any other)."""
        status, *rest = await self.scripts.bump(
            job_id=job_id, running_limit=self.settings.max_running_per_user,
            events_maxlen=self.settings.events_maxlen,
        )
        status = _text(status)
        if status == "not_found":
            raise JobNotFound(job_id)
        if status == "state":
            raise JobNotQueued(_text(rest[0]) or "")

    async def cancel(self, job_id: str, requester: str | None) -> str:
        """Cancel; `requester` None means an admin. Returns the state after the call."""
        s = self.settings
        status, *rest = await self.scripts.cancel(
            job_id=job_id, requester=requester or "", running_limit=s.max_running_per_user,
            retention_s=s.retention_s, history=s.history_per_user, events_maxlen=s.events_maxlen,
        )
        status = _text(status)
        if status == "not_found":
            raise JobNotFound(job_id)
        if status == "final":
            raise JobFinished(_text(rest[0]) or "")
        return _text(rest[0]) or ""

    # -- workers ------------------------------------------------------------------------
    async def register_worker(self, worker_id: str, info: dict[str, Any]) -> None:
        """A fresh entry for the worker; the connected time of its earlier registrations
        today is carried over (`earlier_ms`, `earlier_day`) for the day's cost."""
        now_ms = await self._now_ms()
        key = self.key("worker", worker_id)
        old = await self.redis.hmget(
            key, "registered_at", "released_at", "earlier_ms", "earlier_day"
        )
        last_seen = await self.redis.zscore(self.key("workers"), worker_id)
        earlier = 0
        if old[0] is not None:
            end = _int_or_none(_text(old[1])) or int(last_seen or now_ms)
            before = stats.WorkerSession(
                worker_id, None, int(old[0]), end, int(old[2] or 0),
                _int_or_none(_text(old[3])),
            )
            earlier = stats.earlier_today(before, now_ms) + stats.connected_ms_today(
                before.registered_at, end, now_ms
            )
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(
                key,
                mapping={
                    "info": orjson.dumps(info), "registered_at": now_ms, "state": "active",
                    "catalog": info.get("catalog_hash") or "", "earlier_ms": earlier,
                    "earlier_day": stats.day_of(now_ms),
                },
            )
            pipe.zadd(self.key("workers"), {worker_id: now_ms})
            pipe.zrem(self.key("released"), worker_id)
            await pipe.execute()

    async def worker_registered(self, worker_id: str) -> bool:
        """Whether `worker_id` registered (its entry exists). A yes is remembered for a few
        seconds: lease and heartbeat ask on every call."""
        now = time.monotonic()
        if self._registered.get(worker_id, 0.0) > now:
            return True
        if not await self.redis.exists(self.key("worker", worker_id)):
            return False
        if len(self._registered) > 10_000:
            self._registered.clear()
        self._registered[worker_id] = now + 5.0
        return True

    async def claim(self, worker_id: str, prefetch: bool = False, idle_ms: int = 0) -> Claim:
        """Lease the next job by the current mode (if any is ready), and tell the worker
        which of its jobs were cancelled meanwhile. `prefetch`: the worker is busy (refused
        while any worker waits idle); `idle_ms` > 0: an idle worker that finds nothing is
        marked as waiting for that long (see `lease_next` in lua/lib.lua)."""
        s = self.settings
        lease_id = new_id()
        result = await self.scripts.claim(
            worker_id=worker_id, lease_id=lease_id, lease_ms=self._lease_ms,
            running_limit=s.max_running_per_user, default_mode=s.mode,
            events_maxlen=s.events_maxlen, prefetch=int(prefetch), idle_ms=idle_ms,
        )
        return _claim(result, lease_id)

    async def complete_and_claim(
        self,
        job_id: str,
        lease_id: str,
        outputs: dict[str, Any],
        worker_id: str,
        gpu_ms: int | None = None,
        comfy_history: dict[str, Any] | None = None,
        prefetch: bool = False,
        idle_ms: int = 0,
    ) -> tuple[Completion, Claim]:
        """`complete`, then `claim` for the same worker, in one atomic step. Nothing is
        leased if the completion is refused (LeaseLost / JobNotFound)."""
        s = self.settings
        next_lease_id = new_id()
        done, *claimed = await self.scripts.complete_claim(
            job_id=job_id, lease_id=lease_id, outputs=orjson.dumps(outputs),
            running_limit=s.max_running_per_user, retention_s=s.retention_s,
            history=s.history_per_user, events_maxlen=s.events_maxlen, worker_id=worker_id,
            next_lease_id=next_lease_id, lease_ms=self._lease_ms, default_mode=s.mode,
            gpu_ms=_optional(gpu_ms), comfy_history=_optional(comfy_history),
            prefetch=int(prefetch), idle_ms=idle_ms,
        )
        return self._completion(done, job_id), _claim(claimed[0], next_lease_id)

    async def start(self, job_id: str, lease_id: str) -> bool:
        """Mark the job running; returns whether a cancel was requested."""
        status, *rest = await self.scripts.start(
            job_id=job_id, lease_id=lease_id, events_maxlen=self.settings.events_maxlen
        )
        self._check(status, job_id)
        return _text(rest[0]) == "1"

    async def progress(self, job_id: str, lease_id: str, progress: dict[str, Any]) -> bool:
        """Record a progress step (renewing the lease); returns whether to cancel."""
        status, *rest = await self.scripts.progress(
            job_id=job_id, lease_id=lease_id, lease_ms=self._lease_ms,
            progress=orjson.dumps(progress), events_maxlen=self.settings.events_maxlen,
        )
        self._check(status, job_id)
        return _text(rest[0]) == "1"

    async def heartbeat(
        self, worker_id: str, leases: list[tuple[str, str]]
    ) -> tuple[list[str], list[str], bool]:
        """Renew leases; returns (jobs to cancel, jobs whose lease is lost, draining)."""
        cancel, lost, drain = await self.scripts.heartbeat(
            worker_id=worker_id, lease_ms=self._lease_ms, leases=orjson.dumps(leases)
        )
        return [_text(c) or "" for c in cancel], [_text(x) or "" for x in lost], drain == 1

    async def complete(
        self,
        job_id: str,
        lease_id: str,
        outputs: dict[str, Any],
        gpu_ms: int | None = None,
        comfy_history: dict[str, Any] | None = None,
    ) -> Completion:
        s = self.settings
        done = await self.scripts.complete(
            job_id=job_id, lease_id=lease_id, outputs=orjson.dumps(outputs),
            running_limit=s.max_running_per_user, retention_s=s.retention_s,
            history=s.history_per_user, events_maxlen=s.events_maxlen,
            gpu_ms=_optional(gpu_ms), comfy_history=_optional(comfy_history),
        )
        return self._completion(done, job_id)

    def _completion(self, done: list[Any], job_id: str) -> Completion:
        """Parse complete's reply: {'ok', timestamps} or {error}."""
        self._check(done[0], job_id)
        queued_at, leased_at, started_at, finished_at = (_int_or_none(_text(v)) for v in done[1])
        assert queued_at is not None and leased_at is not None and finished_at is not None
        return Completion(queued_at, leased_at, started_at, finished_at)

    async def fail(
        self,
        job_id: str,
        lease_id: str,
        error: dict[str, Any],
        retry: bool,
        gpu_ms: int | None = None,
        comfy_history: dict[str, Any] | None = None,
    ) -> str:
        """Record a failure; returns the job's new state (failed, queued or cancelled)."""
        s = self.settings
        status, *rest = await self.scripts.fail(
            job_id=job_id, lease_id=lease_id, error_json=orjson.dumps(error), retry=int(retry),
            max_attempts=s.max_attempts, running_limit=s.max_running_per_user,
            retention_s=s.retention_s, history=s.history_per_user, events_maxlen=s.events_maxlen,
            gpu_ms=_optional(gpu_ms), comfy_history=_optional(comfy_history),
        )
        self._check(status, job_id)
        return _text(rest[0]) or ""

    # -- the worker protocol's additions (docs/architecture.md) --------------------------
    async def relay(
        self, job_id: str, lease_id: str, messages: list[bytes], progress: dict[str, Any] | None,
        start: bool,
    ) -> bool:
        """Append ComfyUI's messages about a job as `comfy` events, in order (each an encoded
        `{"type", "data"}` object); renews the lease. Returns whether to cancel."""
        status, *rest = await self.scripts.relay(
            job_id=job_id, lease_id=lease_id, lease_ms=self._lease_ms,
            messages=orjson.dumps([m.decode() for m in messages]), progress=_optional(progress),
            start=int(start), events_maxlen=self.settings.events_maxlen,
        )
        self._check(status, job_id)
        return _text(rest[0]) == "1"

    async def release_job(self, job_id: str, lease_id: str) -> str:
        """Give one held job back without spending its attempt; returns its new state."""
        s = self.settings
        status, *rest = await self.scripts.release_job(
            job_id=job_id, lease_id=lease_id, running_limit=s.max_running_per_user,
            retention_s=s.retention_s, history=s.history_per_user, events_maxlen=s.events_maxlen,
        )
        self._check(status, job_id)
        return _text(rest[0]) or ""

    async def decline(self, job_id: str, lease_id: str, error: dict[str, Any]) -> str:
        """The worker lacks what the job needs: queued again for the others (failed with
        `error` if no live worker is left that has not declined it). Returns the new state."""
        s = self.settings
        status, *rest = await self.scripts.decline(
            job_id=job_id, lease_id=lease_id, error_json=orjson.dumps(error),
            lost_after_ms=int(s.worker_lost_after_s * 1000), running_limit=s.max_running_per_user,
            retention_s=s.retention_s, history=s.history_per_user, events_maxlen=s.events_maxlen,
        )
        self._check(status, job_id)
        return _text(rest[0]) or ""

    async def reap_declined(self) -> list[str]:
        """Fail the queued jobs that every live worker declined; returns their ids."""
        s = self.settings
        failed = await self.scripts.reap_declined(
            lost_after_ms=int(s.worker_lost_after_s * 1000), running_limit=s.max_running_per_user,
            retention_s=s.retention_s, history=s.history_per_user, events_maxlen=s.events_maxlen,
        )
        return [_text(j) or "" for j in failed]

    async def set_worker_status(self, worker_id: str, status: dict[str, Any]) -> None:
        """Keep a worker's last health line (its heartbeat's `status`) for the admin view."""
        await self.redis.hset(self.key("worker", worker_id), "status", orjson.dumps(status))

    async def has_catalog(self, digest: str) -> bool:
        return bool(await self.redis.exists(self.key("catalog", digest)))

    async def put_catalog(self, digest: str, raw: bytes) -> None:
        """Keep a node catalogue (`/object_info` bytes) under its sha256, compressed, and
        remember it as the last one any worker sent."""
        blob = await _compress(raw)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.key("catalog", digest), blob)
            pipe.set(self.key("catalog_last"), digest)
            await pipe.execute()

    async def get_catalog(self, digest: str) -> bytes | None:
        blob = await self.redis.get(self.key("catalog", digest))
        if blob is None:
            return None
        if len(blob) > _OFFLOAD_BYTES // 4:
            return await asyncio.to_thread(zlib.decompress, blob)
        return zlib.decompress(blob)

    async def catalog_hashes(self) -> list[str]:
        """The catalogues of the live workers (sorted, distinct), or else the last one any
        worker sent ([] if none ever did)."""
        now_ms = await self._now_ms()
        lost_after_ms = self.settings.worker_lost_after_s * 1000
        live = await self.redis.zrange(
            self.key("workers"), now_ms - lost_after_ms, "+inf", byscore=True
        )
        digests: set[str] = set()
        if live:
            async with self.redis.pipeline(transaction=False) as pipe:
                for worker_id in live:
                    pipe.hget(self.key("worker", _text(worker_id) or ""), "catalog")
                found = await pipe.execute()
            digests = {d for d in (_text(x) for x in found) if d}
        if not digests:
            last = _text(await self.redis.get(self.key("catalog_last")))
            digests = {last} if last else set()
        return sorted(digests)

    async def release(self, worker_id: str) -> int:
        """Requeue every job of a leaving worker (no attempt spent); returns their count."""
        s = self.settings
        return int(
            await self.scripts.release(
                worker_id=worker_id, running_limit=s.max_running_per_user,
                retention_s=s.retention_s, history=s.history_per_user,
                events_maxlen=s.events_maxlen,
            )
        )

    async def reconcile(self) -> int:
        """Rebuild the ready sets under the running limit in force (run at startup: the
        scripts keep them up to date incrementally, which assumes the limit never changed).
        Returns the number of users looked at."""
        return int(await self.scripts.reconcile(running_limit=self.settings.max_running_per_user))

    async def reap(self, batch: int = 100) -> list[tuple[str, str]]:
        """Requeue or fail jobs whose lease expired; returns (job id, new state) pairs."""
        s = self.settings
        out = await self.scripts.reap(
            max_attempts=s.max_attempts, running_limit=s.max_running_per_user,
            retention_s=s.retention_s, history=s.history_per_user, batch=batch,
            events_maxlen=s.events_maxlen,
        )
        return [(_text(a) or "", _text(b) or "") for a, b in out]

    async def worker_jobs(self, worker_id: str) -> set[str]:
        return {_text(j) or "" for j in await self.redis.smembers(self.key("wjobs", worker_id))}

    async def set_draining(self, worker_id: str, draining: bool) -> WorkerInfo | None:
        """Drain a worker (it finishes what it holds, leases nothing new) or take it back;
        None if no such worker. The `worker` event wakes its long-poll to hear so."""
        if not await self.redis.exists(self.key("worker", worker_id)):
            return None
        async with self.redis.pipeline(transaction=True) as pipe:
            if draining:
                pipe.sadd(self.key("draining"), worker_id)
            else:
                pipe.srem(self.key("draining"), worker_id)
            self._emit(
                pipe, EventType.WORKER, {"worker": worker_id, "draining": draining},
                state="draining" if draining else "undrained",
            )
            await pipe.execute()
        return next((w for w in await self.workers() if w.id == worker_id), None)

    async def workers(self) -> list[WorkerInfo]:
        """Registered workers with liveness; a worker silent for too long is shown as lost."""
        now_ms = await self._now_ms()
        seen = await self.redis.zrange(self.key("workers"), 0, -1, withscores=True)
        draining = {_text(w) for w in await self.redis.smembers(self.key("draining"))}
        out: list[WorkerInfo] = []
        lost_after_ms = self.settings.worker_lost_after_s * 1000
        for raw_id, last_seen in seen:
            worker_id = _text(raw_id) or ""
            if now_ms - last_seen > _FORGET_WORKER_MS:
                await self.redis.zrem(self.key("workers"), worker_id)
                await self.redis.delete(self.key("worker", worker_id))
                continue
            raw = _decode_hash(await self.redis.hgetall(self.key("worker", worker_id)))
            jobs = await self.worker_jobs(worker_id)
            out.append(
                WorkerInfo(
                    id=worker_id,
                    state="lost" if now_ms - last_seen > lost_after_ms else "alive",
                    last_seen=int(last_seen),
                    registered_at=_int_or_none(raw.get("registered_at")),
                    info=_json_or_none(raw.get("info")) or {},
                    jobs=sorted(jobs),
                    status=_json_or_none(raw.get("status")),
                    draining=worker_id in draining,
                )
            )
        return out

    # -- admin and metrics --------------------------------------------------------------
    async def get_mode(self) -> Mode:
        raw = _text(await self.redis.get(self.key("mode")))
        return Mode(raw) if raw else self.settings.mode

    async def set_mode(self, mode: Mode) -> None:
        await self.redis.set(self.key("mode"), mode.value)
        await self._emit(self.redis, EventType.MODE, {"mode": mode.value})

    async def push_workflow(self, user: str, workflow: dict[str, Any]) -> None:
        """Send a workflow to one participant's canvas, or every one's (`user` EVERYONE):
        an event their gateways turn into the frontend's `workshop.push_workflow`."""
        await self._emit(self.redis, EventType.PUSH_WORKFLOW, {"workflow": workflow}, user=user)

    def _emit(
        self, target: Any, kind: EventType, data: dict[str, Any], *, state: str = "",
        user: str = "",
    ) -> Any:
        """Add an event no job owns (mode, pause, drain, a pushed workflow) to the stream,
        through `target`: the client, or a pipeline whose MULTI it joins."""
        event = {"type": kind.value, "job": "", "user": user, "state": state,
                 "data": orjson.dumps(data)}  # fmt: skip
        return target.xadd(
            self.key("events"), event, maxlen=self.settings.events_maxlen, approximate=True
        )

    async def set_limits(self, uid: str, running: int | None, daily: int | None) -> None:
        """An admin's limits for `uid` (None: the queue's running limit, no daily limit);
        the running limit applies at once (the user is parked or unparked)."""
        data = orjson.dumps({"user": uid, "running": running, "daily": daily})
        await self.scripts.set_limits(
            uid=uid, running=_optional(running), daily=_optional(daily),
            running_limit=self.settings.max_running_per_user,
            events_maxlen=self.settings.events_maxlen, data=data,
        )

    async def limits(self) -> dict[str, dict[str, int | None]]:
        """Every user's overrides: {uid: {"running", "daily"}} (only users with one)."""
        running = await self.redis.hgetall(self.key("rlimit"))
        daily = await self.redis.hgetall(self.key("dlimit"))
        out: dict[str, dict[str, int | None]] = {}
        for field, table in (("running", running), ("daily", daily)):
            for uid, value in table.items():
                out.setdefault(uid.decode(), {"running": None, "daily": None})[field] = int(value)
        return out

    async def usage(self, uids: list[str]) -> dict[str, dict[str, float]]:
        """{uid: {"jobs_today", "jobs", "gpu_s"}}: submits today (UTC) and in all, and GPU
        seconds of their ended jobs (as their workers measured)."""
        day = await self._now_ms() // 86_400_000
        totals = await self.usage_totals()
        keys = [self.key("daily", u, str(day)) for u in uids]
        today = await self.redis.mget(keys) if keys else []
        return {
            uid: {"jobs_today": int(t or 0), **totals.get(uid, {"jobs": 0, "gpu_s": 0.0})}
            for uid, t in zip(uids, today, strict=True)
        }

    # -- the cockpit's numbers (services/queue/stats.py) --------------------------------
    async def stats_buckets(self) -> list[stats.Bucket]:
        """The window's per-minute counters (`tput:<minute>`, `waits:<minute>`), oldest
        first: two small reads per minute, whatever the number of jobs."""
        minutes = stats.window_minutes(await self._now_ms())
        async with self.redis.pipeline(transaction=False) as pipe:
            for minute in minutes:
                pipe.hmget(self.key("tput", str(minute)), "done", "failed")
                pipe.lrange(self.key("waits", str(minute)), 0, -1)
            raw = await pipe.execute()
        return [
            stats.Bucket(minute, int(t[0] or 0), int(t[1] or 0), [int(x) for x in w])
            for minute, t, w in zip(minutes, raw[::2], raw[1::2], strict=True)
        ]

    async def usage_totals(self) -> dict[str, dict[str, float]]:
        """{uid: {"jobs", "gpu_s"}} for every user who submitted: jobs submitted in all and
        GPU seconds of their ended jobs (the counters GET users reads too)."""
        jobs = await self.redis.hgetall(self.key("ujobcount"))
        gpu = await self.redis.hgetall(self.key("ugpums"))
        return {
            uid.decode(): {"jobs": int(jobs.get(uid, 0)), "gpu_s": int(gpu.get(uid, 0)) / 1000}
            for uid in sorted({*jobs, *gpu})
        }

    async def recent_gpu_ms(self) -> list[int]:
        """GPU milliseconds of the newest jobs that reported one (lua/lib.lua RECENT_GPU)."""
        return [int(x) for x in await self.redis.lrange(self.key("recentgpu"), 0, -1)]

    async def worker_sessions(self) -> tuple[list[stats.WorkerSession], int]:
        """Every worker the day's cost counts: the registered ones (alive: until None; lost:
        until their last heartbeat) and the ones that released today or yesterday (until
        they released; their entry is kept a day). With the Redis clock's now (ms)."""
        now_ms = await self._now_ms()
        lost_after_ms = self.settings.worker_lost_after_s * 1000
        seen = {
            _text(w) or "": int(score)
            for w, score in await self.redis.zrange(self.key("workers"), 0, -1, withscores=True)
        }
        released = [
            _text(w) or ""
            for w in await self.redis.zrange(
                self.key("released"), now_ms - stats.DAY_MS, "+inf", byscore=True
            )
        ]
        ids = [*seen, *(w for w in released if w not in seen)]
        fields = ("registered_at", "released_at", "info", "earlier_ms", "earlier_day")
        async with self.redis.pipeline(transaction=False) as pipe:
            for worker_id in ids:
                pipe.hmget(self.key("worker", worker_id), *fields)
            rows = await pipe.execute()
        sessions: list[stats.WorkerSession] = []
        for worker_id, (registered, released_at, info, earlier, day) in zip(
            ids, rows, strict=True
        ):
            if registered is None:  # its entry expired or was forgotten
                continue
            if worker_id in seen:
                last = seen[worker_id]
                until = None if now_ms - last <= lost_after_ms else last
            else:
                until = _int_or_none(_text(released_at)) or int(registered)
            price = (_json_or_none(_text(info)) or {}).get("hourly_eur")
            sessions.append(
                stats.WorkerSession(
                    worker_id, float(price) if price is not None else None, int(registered),
                    until, int(earlier or 0), _int_or_none(_text(day)),
                )
            )
        return sessions, now_ms

    async def is_paused(self) -> bool:
        return bool(await self.redis.exists(self.key("paused")))

    async def set_paused(self, paused: bool) -> None:
        """Pause (nothing is leased, submits still queue) or resume, for every replica; the
        `queue` event goes out in the same MULTI and wakes every long-polling worker."""
        async with self.redis.pipeline(transaction=True) as pipe:
            if paused:
                pipe.set(self.key("paused"), "1")
            else:
                pipe.delete(self.key("paused"))
            self._emit(
                pipe, EventType.QUEUE, {"paused": paused},
                state="paused" if paused else "resumed",
            )
            await pipe.execute()

    async def counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """(live jobs by state, jobs ended since the start by final state)."""
        live = await self.redis.hgetall(self.key("states"))
        totals = await self.redis.hgetall(self.key("totals"))
        return (
            {k.decode(): int(v) for k, v in live.items()},
            {k.decode(): int(v) for k, v in totals.items()},
        )

    async def _now_ms(self) -> int:
        seconds, micros = await self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    @staticmethod
    def _check(status: bytes | str, job_id: str) -> None:
        status = _text(status)
        if status == "lease_lost":
            raise LeaseLost(job_id)
        if status == "not_found":
            raise JobNotFound(job_id)
