"""The GPU pool in aggregate (`GET /api/pool`): what a participant may know about the workers.

ComfyUI's `/system_stats` (served by the gateway) and the gateway's queue display are built
from it: how many workers are alive, their ComfyUI devices and versions, the models they
have, how long a job runs and how many wait. No worker ids, hosts, paths or other users."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from services.contracts import JobState
from services.queue.api.deps import Ctx
from services.queue.auth import Person
from services.queue.context import QueueContext
from services.queue.models import Pool

router = APIRouter(prefix="/api", tags=["jobs"])

#: The pool changes slowly and every open ComfyUI tab asks: one answer per replica this long.
_CACHE_S = 2.0
_cache: dict[int, tuple[float, Pool]] = {}


def _models(info: dict[str, Any]) -> dict[str, list[str]]:
    """A worker's models: `{folder: [names]}` (a bare list of names is counted as
    checkpoints: registrations before the worker protocol listed them flat)."""
    models = info.get("models") or {}
    if isinstance(models, list):
        return {"checkpoints": [str(m) for m in models]}
    return {str(k): [str(n) for n in v] for k, v in models.items() if isinstance(v, list)}


def summarize(infos: list[dict[str, Any]], queued: int, mean_run_s: float | None) -> Pool:
    """The pool as participants see it, from the live workers' registrations."""
    devices: list[dict[str, Any]] = []
    models: dict[str, set[str]] = {}
    comfyui_version = required_frontend = None
    for info in infos:
        stats = info.get("system_stats") or {}
        system = stats.get("system") or {}
        devices.extend(d for d in stats.get("devices") or [] if isinstance(d, dict))
        comfyui_version = comfyui_version or (info.get("comfyui") or {}).get("version") or (
            system.get("comfyui_version")
        )
        required_frontend = required_frontend or system.get("required_frontend_version")
        for folder, names in _models(info).items():
            models.setdefault(folder, set()).update(names)
    return Pool(
        workers_alive=len(infos),
        devices=devices,
        comfyui_version=comfyui_version,
        required_frontend_version=required_frontend,
        mean_run_s=mean_run_s,
        queued_total=queued,
        models={folder: sorted(names) for folder, names in sorted(models.items())},
    )


async def current_pool(ctx: QueueContext) -> Pool:
    now = time.monotonic()
    cached = _cache.get(id(ctx))
    if cached and cached[0] > now:
        return cached[1]
    workers = [w for w in await ctx.store.workers() if w.state == "alive"]
    live, _ = await ctx.store.counts()
    pool = summarize(
        [w.info for w in workers], live.get(JobState.QUEUED, 0), await ctx.store.mean_run_s()
    )
    _cache.clear()  # one entry: the current app's
    _cache[id(ctx)] = (now + _CACHE_S, pool)
    return pool


@router.get("/pool", response_model=Pool)
async def pool(_: Person, ctx: Ctx) -> Pool:
    """The GPU pool in aggregate (any signed-in person)."""
    return await current_pool(ctx)
