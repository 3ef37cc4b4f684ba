"""`/api/workshop/queue`: what the frontend extension shows each participant: their place in
the shared queue, an estimate of when their job starts, and whether any GPU worker is
connected (ComfyUI's own UI only counts the participant's own queue)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from services.contracts import JobState
from services.gateway import info, prompts, responses
from services.gateway.context import Gateway, Space

#: Until the queue has timed a job, assume this (seconds): an SDXL image on a rented GPU.
DEFAULT_RUN_S = 20.0


def start_estimate_s(position: int, workers: int, mean_run_s: float) -> float:
    """Seconds until a job at `position` (1-based, in the shared queue) starts, if every
    worker takes one job at a time and jobs take `mean_run_s`: the jobs ahead are served
    `workers` at a time, and the running ones are half done on average."""
    ahead = max(position - 1, 0)
    return (ahead // max(workers, 1)) * mean_run_s + mean_run_s / 2


async def queue_place(request: Request, gw: Gateway, space: Space) -> Response:
    pool = await info.pool(gw, space.token)
    jobs = await prompts.live_jobs(gw, space)
    workers = int(pool.get("workers_alive") or 0)
    mean = float(pool.get("mean_run_s") or DEFAULT_RUN_S)
    listed = []
    for job in jobs:
        item = {"prompt_id": job["id"], "state": job["state"], "position": job.get("position")}
        if job["state"] == JobState.QUEUED and job.get("position") and workers:
            item["starts_in_s"] = round(start_estimate_s(job["position"], workers, mean))
        listed.append(item)
    return responses.json(
        {
            "workers_alive": workers,
            "queued_total": int(pool.get("queued_total") or 0),
            "mean_run_s": pool.get("mean_run_s"),
            "jobs": listed,
        }
    )
