"""The cockpit's numbers (issue 12): throughput and queue waits per minute, the day's GPU cost,
and when the backlog clears. Pure functions over records the store read; no I/O, no clock.

Why counters written by the Lua scripts rather than a pass over finished jobs' records: the
statistics are read every few seconds by the dashboard, and a pass over the last hour's job
hashes costs one read per job (10,000 of them take ~0.4 s from Python, and a job history
trimmed per user loses some). `finish` counts each ended job in `tput:<minute>` and the claim
pushes each job's first queue wait onto `waits:<minute>` (see the key table in lua/lib.lua):
a constant number of commands per transition, and reading an hour is 120 small reads
whatever the number of jobs.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from services.contracts import STATS_BUCKET_S, STATS_WINDOW_S

DAY_MS = 86_400_000
BUCKET_MS = STATS_BUCKET_S * 1000
#: The buckets shown: the current minute and the ones before it, over the window.
BUCKETS = STATS_WINDOW_S // STATS_BUCKET_S


@dataclass(frozen=True)
class Bucket:
    """One minute as the scripts recorded it: ended jobs, and queue waits (ms)."""

    minute: int  # minutes since the epoch (the `tput:<minute>` key's number)
    done: int
    failed: int
    waits_ms: Sequence[int]


def window_minutes(now_ms: int) -> list[int]:
    """The minutes (since the epoch) shown, oldest first, the current one last."""
    current = now_ms // BUCKET_MS
    return list(range(current - BUCKETS + 1, current + 1))


def throughput(buckets: Iterable[Bucket]) -> list[dict[str, int]]:
    """[{t (the minute's start, Unix ms), done, failed}] in the buckets' order."""
    return [{"t": b.minute * BUCKET_MS, "done": b.done, "failed": b.failed} for b in buckets]


def waits(buckets: Iterable[Bucket]) -> list[dict[str, float | int | None]]:
    """[{t, p50, max}] in seconds; None for a minute in which no job was first leased."""
    out: list[dict[str, float | int | None]] = []
    for b in buckets:
        if b.waits_ms:
            p50: float | None = statistics.median(b.waits_ms) / 1000
            top: float | None = max(b.waits_ms) / 1000
        else:
            p50 = top = None
        out.append({"t": b.minute * BUCKET_MS, "p50": p50, "max": top})
    return out


# -- cost ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class WorkerSession:
    """What the cost needs of one worker: its price, when its current registration began,
    when it was last heard of (None: alive, so until now), and the connected milliseconds
    of its earlier registrations on UTC day `earlier_day` (0 if none)."""

    id: str
    hourly_eur: float | None
    registered_at: int
    until: int | None
    earlier_ms: int = 0
    earlier_day: int | None = None


def day_of(ms: int) -> int:
    """The UTC day (days since the epoch) of a Unix-ms instant."""
    return ms // DAY_MS


def connected_ms_today(start: int, end: int, now_ms: int) -> int:
    """The part of [start, end] that lies in the UTC day of `now_ms`."""
    day_start = day_of(now_ms) * DAY_MS
    return max(0, min(end, now_ms) - max(start, day_start))


def earlier_today(session: WorkerSession, now_ms: int) -> int:
    """A session's previous registrations' connected ms, if they were on today's date."""
    return session.earlier_ms if session.earlier_day == day_of(now_ms) else 0


def cost(sessions: Iterable[WorkerSession], now_ms: int) -> dict[str, object]:
    """The day's cost so far: each worker's hourly price * its connected time today (its
    registrations, from each registration to its last heartbeat, or now while alive).
    `per_hour_eur`: what the workers alive now cost per hour. A worker without a price
    counts zero (hourly_eur None)."""
    workers: list[dict[str, object]] = []
    total = per_hour = 0.0
    for s in sorted(sessions, key=lambda s: s.id):
        end = now_ms if s.until is None else s.until
        ms = earlier_today(s, now_ms) + connected_ms_today(s.registered_at, end, now_ms)
        eur = (s.hourly_eur or 0.0) * ms / 3_600_000
        total += eur
        if s.until is None:
            per_hour += s.hourly_eur or 0.0
        workers.append(
            {"id": s.id, "hourly_eur": s.hourly_eur, "connected_s": ms / 1000, "eur": eur}
        )
    return {"total_eur": total, "per_hour_eur": per_hour, "workers": workers}


# -- ETA ----------------------------------------------------------------------------------
def eta(backlog: int, gpu_ms: Sequence[int], workers: int) -> dict[str, float | int | None]:
    """When the queued jobs clear: backlog * the median GPU seconds of recent jobs / the
    workers that may lease (alive, not draining), and the same with one more worker.

    An estimate: it assumes every worker runs one job at a time at the median's pace, while
    prefetch (a job queued inside ComfyUI behind the running one), several ComfyUI pairs per
    GPU, cached nodes and the jobs running now all move the real figure."""
    job_s = statistics.median(gpu_ms) / 1000 if gpu_ms else None

    def clears(n: int) -> float | None:
        return None if job_s is None or n <= 0 else backlog * job_s / n

    return {
        "backlog": backlog,
        "job_s": job_s,
        "workers": workers,
        "clears_in_s": clears(workers),
        "clears_in_s_with_one_more": clears(workers + 1),
    }
