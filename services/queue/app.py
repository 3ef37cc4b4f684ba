"""The queue service: FastAPI app factory, lifespan, error shapes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError
from starlette.types import Receive, Scope, Send

from services.admin import mount_dashboard
from services.queue.api import admin, catalog, cockpit, jobs, ops, pool, stats, workers
from services.queue.api.errors import INTERNAL, STORAGE_DOWN, validation_error
from services.queue.api.hotpath import HotPath, HotRoute
from services.queue.auth import Authenticator, LastAdmin, require_person, require_worker
from services.queue.context import QueueContext
from services.queue.events import EventHub
from services.queue.limits import BodySizeLimit
from services.queue.logging import configure_logging
from services.queue.metrics import QueueMetrics
from services.queue.models import CompleteRequest, LeaseRequest, SubmitRequest
from services.queue.settings import QueueSettings
from services.queue.store import JobStore

log = structlog.get_logger(__name__)

#: One submit, one lease and one complete per job: these skip FastAPI's per-request layers
#: (see api/hotpath.py). Each must match its FastAPI declaration; a test checks OpenAPI.
HOT_ROUTES = (
    HotRoute("POST", "/api/jobs", jobs.submit_job, SubmitRequest, require_person, 201),
    HotRoute("POST", "/api/worker/lease", workers.lease, LeaseRequest, require_worker),
    HotRoute(
        "POST", "/api/worker/jobs/{job_id}/complete", workers.complete, CompleteRequest,
        require_worker, 204,
    ),
)


async def _reap_forever(store: JobStore, interval_s: float, stop: asyncio.Event) -> None:
    """Expired leases are handled by every replica; the Lua script makes that safe.

    Stopped by `stop`, not by cancelling the task: a cancellation that lands inside the Redis
    client can be swallowed there (seen about once in 10 test shutdowns), and the loop would
    then run on and hang the shutdown."""
    while not stop.is_set():
        try:
            for job_id, state in await store.reap():
                log.warning("lease expired", job=job_id, now=state)
            for job_id in await store.reap_declined():
                log.warning("declined by every live worker", job=job_id, now="failed")
        except (RedisError, OSError) as exc:
            log.warning("reaper could not reach redis", error=str(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


class QueueApp(FastAPI):
    """FastAPI, except that the hot routes are answered before its middleware stack."""

    def __init__(self, hot: HotPath, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hot = hot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self.hot.match(scope)
        if found is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        await self.hot.serve(found, scope, receive, send)


def redis_pool(settings: QueueSettings) -> BlockingConnectionPool:
    """The requests' shared pool: when every connection is busy a request waits for one
    (bounded by the pool timeout) rather than failing with 'Too many connections'."""
    return BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_pool_timeout_s,
        health_check_interval=30,
    )


def create_app(settings: QueueSettings | None = None) -> FastAPI:
    """Build the app; settings default to the QUEUE_* environment."""
    settings = settings or QueueSettings()  # type: ignore[call-arg]
    configure_logging()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = Redis.from_pool(redis_pool(settings))  # closing it closes the pool
        store = JobStore(redis, settings)
        auth = Authenticator(redis, settings)
        # The hub blocks in XREAD; its own connection, with a timeout longer than the block.
        hub = EventHub(
            Redis.from_url(settings.redis_url, socket_timeout=10), store.key("events"),
            on_session=auth.forget,
        )
        await auth.seed()
        await store.reconcile()
        await hub.start()
        app.state.ctx = QueueContext(settings, store, auth, hub, QueueMetrics())
        stop_reaper = asyncio.Event()
        reaper = asyncio.create_task(_reap_forever(store, settings.reap_interval_s, stop_reaper))
        log.info("queue service started", mode=settings.mode, redis=settings.redis_url)
        try:
            yield
        finally:
            stop_reaper.set()
            await reaper
            await hub.stop()
            await hub.redis.aclose()
            await redis.aclose()

    app = QueueApp(
        HotPath(HOT_ROUTES, settings.max_body_bytes),
        title="ComfyUI workshop queue",
        version="0.1.0",
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        code, message = validation_error(exc.errors())
        return JSONResponse({"detail": message}, status_code=code)

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return JSONResponse({"detail": INTERNAL}, status_code=500)

    @app.exception_handler(LastAdmin)
    async def _last_admin(_: Request, exc: LastAdmin) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(RedisError)
    async def _redis_down(_: Request, exc: RedisError) -> JSONResponse:
        log.error("redis error", error=str(exc))
        return JSONResponse({"detail": STORAGE_DOWN}, status_code=503)

    for module in (ops, jobs, pool, workers, catalog, admin, cockpit, stats):
        app.include_router(module.router)
    mount_dashboard(app)
    return app
