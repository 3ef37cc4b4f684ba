"""Prometheus metrics: live jobs by state and workers alive (read from Redis at scrape time,
so every replica reports the same), plus this replica's wait and run-time histograms."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from services.contracts import LIVE_STATES, JobState
from services.queue.store import Completion, JobStore

_FINAL = tuple(state for state in JobState if state not in LIVE_STATES)
_BUCKETS_S = (0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800)


class QueueMetrics:
    """One registry per app instance, so tests can run several apps in one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs = Gauge(
            "comfyq_jobs", "Live jobs by state", ["state"], registry=self.registry
        )
        self.finished = Gauge(
            "comfyq_jobs_finished", "Jobs that ended, by final state (since the data began)",
            ["state"], registry=self.registry,
        )
        self.workers = Gauge(
            "comfyq_workers", "Registered workers by liveness", ["state"], registry=self.registry
        )
        self.queue_wait = Histogram(
            "comfyq_queue_wait_seconds", "From submit to a worker leasing the job",
            buckets=_BUCKETS_S, registry=self.registry,
        )
        self.run_time = Histogram(
            "comfyq_run_seconds", "From lease to completion",
            buckets=_BUCKETS_S, registry=self.registry,
        )
        self.requests_rejected = Counter(
            "comfyq_rejected_total", "Requests refused by limits", ["reason"],
            registry=self.registry,
        )

    def observe_completion(self, done: Completion) -> None:
        self.run_time.observe(max(0, done.finished_at - done.leased_at) / 1000)

    async def render(self, store: JobStore) -> bytes:
        live, totals = await store.counts()
        for state in LIVE_STATES:
            self.jobs.labels(state.value).set(live.get(state.value, 0))
        for state in _FINAL:
            self.finished.labels(state.value).set(totals.get(state.value, 0))
        workers = await store.workers()
        for state in ("alive", "lost"):
            self.workers.labels(state).set(sum(1 for w in workers if w.state == state))
        return generate_latest(self.registry)
