"""Draining workers from the cockpit (issue 12): a drained worker finishes what it holds,
leases nothing new, and hears `drain: true` in its lease and heartbeat answers; the real
worker (on the ComfyUI double) reacts and says `draining` in its health line."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from services.contracts import JobState
from tests.queue_harness import WORKFLOW, QueueHarness, WorkerClient, events
from tests.worker_harness import one_worker, submit, until

pytestmark = pytest.mark.timeout(60)

#: A graph the ComfyUI double runs.
DOUBLE_JOB = {
    "1": {"class_type": "EmptyImage",
          "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 1}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "d"}},
}  # fmt: skip


async def _heartbeat(worker: WorkerClient, leases: list[dict[str, str]]) -> dict[str, Any]:
    r = await worker.http.post(
        "/api/worker/heartbeat", json={"worker_id": worker.worker_id, "leases": leases}
    )
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def test_a_drained_worker_finishes_its_job_and_leases_nothing_new(
    queue: QueueHarness,
) -> None:
    admin, alice = await queue.client("admin"), await queue.client("alice")
    w0 = await WorkerClient.register(queue, "w0", instance="gpu0")
    w1 = await WorkerClient.register(queue, "w1")
    first = (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json()["id"]
    second = (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json()["id"]
    held = await w0.lease()
    assert held["job"]["id"] == first
    async with events(queue, "admin") as stream:
        r = await admin.post("/api/admin/workers/w0/gpu0/drain")
        assert r.status_code == 200, r.text
        assert r.json()["id"] == "w0/gpu0" and r.json()["draining"] is True
        assert r.json()["jobs"] == [first]
        event = await stream.until(lambda e: e["type"] == "worker")
        assert event["state"] == "draining"
        assert event["data"] == {"worker": "w0/gpu0", "draining": True}
    listed = {w["id"]: w["draining"] for w in (await admin.get("/api/admin/workers")).json()}
    assert listed == {"w0/gpu0": True, "w1": False}
    # It hears of it, keeps its lease, and finishes its job; the other job is not for it.
    r = await w0.lease_response(wait_s=5)
    assert r.json() == {"cancel": [], "drain": True}
    beat = await _heartbeat(w0, [{"job_id": first, "lease_id": held["lease_id"]}])
    assert beat == {"cancel": [], "lost": [], "drain": True}
    assert (await w0.call(first, "complete", held["lease_id"], outputs={})).status_code == 204
    r = await w0.lease_response(wait_s=0, complete=None, prefetch=True)
    assert r.json()["drain"] is True and "lease" not in r.json()
    assert (await w1.lease())["job"]["id"] == second
    # Taken back: it leases again, and its answers say so.
    third = (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json()["id"]
    r = await admin.post("/api/admin/workers/w0/gpu0/undrain")
    assert r.status_code == 200 and r.json()["draining"] is False
    r = await w0.lease_response(wait_s=0)
    assert "drain" not in r.json() and r.json()["lease"]["job"]["id"] == third
    assert await _heartbeat(w0, []) == {"cancel": [], "lost": []}
    for c in (admin, alice, w0, w1):
        await c.aclose()


async def test_drain_answers_an_idle_long_poll_at_once(queue: QueueHarness) -> None:
    admin = await queue.client("admin")
    w0 = await WorkerClient.register(queue, "w0")
    waiting = asyncio.create_task(w0.lease_response(wait_s=20))
    # The long-poll is waiting once the worker is marked idle in the pool.
    r = await w0.lease_response(wait_s=0, prefetch=True)
    assert r.json() == {"cancel": []}
    started = time.monotonic()
    assert (await admin.post("/api/admin/workers/w0/drain")).status_code == 200
    answer = await asyncio.wait_for(waiting, 10)
    assert answer.json() == {"cancel": [], "drain": True}
    assert time.monotonic() - started < 5
    # A heartbeat long-poll ends when the drain changes, too.
    beat = asyncio.create_task(
        w0.http.post("/api/worker/heartbeat",
                     json={"worker_id": "w0", "leases": [], "wait_s": 20})
    )
    assert (await _heartbeat(w0, []))["drain"] is True
    started = time.monotonic()
    assert (await admin.post("/api/admin/workers/w0/undrain")).status_code == 200
    assert (await asyncio.wait_for(beat, 10)).json() == {"cancel": [], "lost": []}
    assert time.monotonic() - started < 5
    await admin.aclose()
    await w0.aclose()


async def test_drain_of_an_unknown_worker_is_404(queue: QueueHarness) -> None:
    admin = await queue.client("admin")
    for path in ("/api/admin/workers/nobody/drain", "/api/admin/workers/w0/x/undrain"):
        r = await admin.post(path)
        assert r.status_code == 404 and r.json()["detail"].startswith("no worker ")
    await admin.aclose()


async def test_the_real_worker_drains_and_comes_back(queue: QueueHarness, tmp_path: Path) -> None:
    admin, alice = await queue.client("admin"), await queue.client("alice")
    async with one_worker(queue, tmp_path) as setup:
        worker_id = (await admin.get("/api/admin/workers")).json()[0]["id"]
        assert (await admin.post(f"/api/admin/workers/{worker_id}/drain")).status_code == 200
        await until(lambda: setup.worker.draining, what="the worker heard the drain")
        # Its health line (heartbeat status, status file) says so.
        assert setup.worker.status()["state"] == "draining"
        job = await submit(alice, DOUBLE_JOB)
        assert (await alice.get(f"/api/jobs/{job}")).json()["state"] == JobState.QUEUED
        assert (await admin.post(f"/api/admin/workers/{worker_id}/undrain")).status_code == 200
        await until(lambda: not setup.worker.draining, what="the worker heard the undrain")
        assert (await setup.seen.final(job))["state"] == JobState.SUCCEEDED
    for c in (admin, alice):
        await c.aclose()
