"""The cockpit's numbers (issue 12): throughput and waits over the last hour, the day's cost,
and when the backlog clears. Admin only; the computation is in services/queue/stats.py."""

from __future__ import annotations

from fastapi import APIRouter

from services.contracts import STATS_WINDOW_S, JobState
from services.queue import stats
from services.queue.api.deps import Ctx
from services.queue.auth import Admin
from services.queue.models import Cost, Eta, Stats

router = APIRouter(prefix="/api/admin", tags=["admin"])


@router.get("/stats", response_model=Stats)
async def get_stats(_: Admin, ctx: Ctx) -> Stats:
    """Per minute over the last hour: jobs done and failed, queue waits (p50, max, seconds);
    and each user's jobs and GPU seconds in all."""
    buckets = await ctx.store.stats_buckets()
    return Stats.model_validate(
        {
            "window_s": STATS_WINDOW_S,
            "throughput": stats.throughput(buckets),
            "wait_s": stats.waits(buckets),
            "usage": await ctx.store.usage_totals(),
        }
    )


@router.get("/cost", response_model=Cost)
async def get_cost(_: Admin, ctx: Ctx) -> Cost:
    """The UTC day's cost so far: each worker's hourly price * its connected time today
    (released and lost workers included while their entry lasts, a day)."""
    sessions, now_ms = await ctx.store.worker_sessions()
    return Cost.model_validate(stats.cost(sessions, now_ms))


@router.get("/eta", response_model=Eta)
async def get_eta(_: Admin, ctx: Ctx) -> Eta:
    """When the queued jobs clear with the workers that may lease, and with one more
    (an estimate: see `stats.eta`)."""
    live, _totals = await ctx.store.counts()
    workers = await ctx.store.workers()
    leasing = sum(w.state == "alive" and not w.draining for w in workers)
    return Eta.model_validate(
        stats.eta(live.get(JobState.QUEUED, 0), await ctx.store.recent_gpu_ms(), leasing)
    )
