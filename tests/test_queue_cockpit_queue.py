"""The cockpit's queue controls (issue 12): pause and resume, the front lane (bump, and
`front: true` submits), with the real-Redis queue over HTTP."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.queue_harness import WORKFLOW, QueueHarness, WorkerClient, events

pytestmark = pytest.mark.timeout(60)


async def test_pause_holds_every_lease_until_resume(queue: QueueHarness) -> None:
    admin, alice = await queue.client("admin"), await queue.client("alice")
    worker = await WorkerClient.register(queue, "w0")
    async with events(queue, "admin") as stream:
        r = await admin.post("/api/admin/queue/pause")
        assert r.status_code == 200 and r.json() == {"paused": True}
        event = await stream.until(lambda e: e["type"] == "queue")
        assert event["state"] == "paused" and event["data"] == {"paused": True}
        assert (await admin.get("/api/admin/overview")).json()["paused"] is True

        job = await alice.post("/api/jobs", json={"workflow": WORKFLOW})
        assert job.status_code == 201  # submits are still accepted
        # A long-poll that spans the submit's wake-up gets nothing while paused...
        assert await worker.lease(wait_s=0.5) is None
        assert (await alice.get(f"/api/jobs/{job.json()['id']}")).json()["state"] == "queued"
        # ...and a waiting worker gets the job as soon as the queue resumes.
        waiting = asyncio.create_task(worker.lease(wait_s=20))
        prefetch = await worker.lease_response(wait_s=0, prefetch=True)
        assert prefetch.json().get("lease") is None
        started = time.monotonic()
        r = await admin.post("/api/admin/queue/resume")
        assert r.status_code == 200 and r.json() == {"paused": False}
        lease = await asyncio.wait_for(waiting, 10)
        assert lease is not None and lease["job"]["id"] == job.json()["id"]
        assert time.monotonic() - started < 5  # woken by the event, not by its deadline
        event = await stream.until(lambda e: e["type"] == "queue")
        assert event["state"] == "resumed" and event["data"] == {"paused": False}
    assert (await admin.get("/api/admin/overview")).json()["paused"] is False
    for c in (admin, alice, worker):
        await c.aclose()


async def test_pause_and_resume_are_idempotent(queue: QueueHarness) -> None:
    admin = await queue.client("admin")
    for path, paused in (("pause", True), ("pause", True), ("resume", False), ("resume", False)):
        r = await admin.post(f"/api/admin/queue/{path}")
        assert r.json() == {"paused": paused}
    await admin.aclose()
