"""The cockpit's queue controls (issue 12): pause and resume, the front lane (bump, and
`front: true` submits), with the real-Redis queue over HTTP."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.queue_harness import WORKFLOW, QueueHarness, WorkerClient, events, submit_many

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


async def _lease_order(worker: WorkerClient, n: int) -> list[str]:
    """Lease and complete n jobs; their ids in lease order."""
    order = []
    for _ in range(n):
        lease = await worker.lease()
        assert lease is not None
        order.append(lease["job"]["id"])
        r = await worker.call(lease["job"]["id"], "complete", lease["lease_id"], outputs={})
        assert r.status_code == 204
    return order


@pytest.mark.parametrize("mode", ["fair", "fifo", "priority"])
async def test_a_bumped_job_is_leased_before_every_other(queue: QueueHarness, mode: str) -> None:
    admin, alice, bob = [await queue.client(u) for u in ("admin", "alice", "bob")]
    assert (await admin.put("/api/admin/mode", json={"mode": mode})).status_code == 200
    a = await submit_many(alice, 3)
    b = await submit_many(bob, 3)
    async with events(queue, "admin") as stream:
        r = await admin.post(f"/api/admin/jobs/{b[2]}/bump")
        assert r.status_code == 200, r.text
        assert r.json()["id"] == b[2] and r.json()["state"] == "queued"
        assert r.json()["position"] == 1
        event = await stream.until(lambda e: e["type"] == "bumped")
        assert event["job"] == b[2] and event["user"] == "bob"
    # Positions: the bumped job first, every other one a place further back.
    assert (await alice.get(f"/api/jobs/{a[0]}")).json()["position"] == 2
    # The newest bump goes first.
    assert (await admin.post(f"/api/admin/jobs/{a[2]}/bump")).json()["position"] == 1
    assert (await bob.get(f"/api/jobs/{b[2]}")).json()["position"] == 2
    worker = await WorkerClient.register(queue, "w0")
    order = await _lease_order(worker, 6)
    assert order[:2] == [a[2], b[2]]
    rest = {"fair": [a[0], b[0], a[1], b[1]], "fifo": [a[0], a[1], b[0], b[1]],
            "priority": [a[0], b[0], a[1], b[1]]}
    assert order[2:] == rest[mode]
    for c in (admin, alice, bob, worker):
        await c.aclose()


async def test_bump_refuses_jobs_that_are_not_queued(queue: QueueHarness) -> None:
    admin, alice = await queue.client("admin"), await queue.client("alice")
    (job,) = await submit_many(alice, 1)
    worker = await WorkerClient.register(queue, "w0")
    lease = await worker.lease()
    r = await admin.post(f"/api/admin/jobs/{job}/bump")
    assert r.status_code == 409 and "is leased: only a queued job" in r.json()["detail"]
    r = await admin.post("/api/admin/jobs/no-such-job/bump")
    assert r.status_code == 404 and r.json() == {"detail": "no job 'no-such-job'"}
    await worker.call(job, "complete", lease["lease_id"], outputs={})
    r = await admin.post(f"/api/admin/jobs/{job}/bump")
    assert r.status_code == 409 and "succeeded" in r.json()["detail"]
    for c in (admin, alice, worker):
        await c.aclose()


async def test_front_submits_are_for_admins_and_instructors(queue: QueueHarness) -> None:
    admin, alice, carol = [await queue.client(u) for u in ("admin", "alice", "carol")]
    first = await submit_many(alice, 2)
    r = await alice.post("/api/jobs", json={"workflow": WORKFLOW, "front": True})
    assert r.status_code == 403
    assert r.json() == {
        "detail": "only admins and instructors may queue a job at the front (front: true)"
    }
    (demo,) = await submit_many(carol, 1, front=True)  # carol is an instructor
    assert (await carol.get(f"/api/jobs/{demo}")).json()["position"] == 1
    (urgent,) = await submit_many(admin, 1, front=True, user="alice")
    worker = await WorkerClient.register(queue, "w0")
    assert await _lease_order(worker, 4) == [urgent, demo, *first]
    for c in (admin, alice, carol, worker):
        await c.aclose()


async def test_a_front_job_keeps_its_place_when_released_or_cancelled(queue: QueueHarness) -> None:
    admin, alice, bob = [await queue.client(u) for u in ("admin", "alice", "bob")]
    a = await submit_many(alice, 2)
    (b,) = await submit_many(bob, 1)
    await admin.post(f"/api/admin/jobs/{b}/bump")
    worker = await WorkerClient.register(queue, "w0")
    lease = await worker.lease()
    assert lease["job"]["id"] == b
    # Given back by its worker: it goes back to the front lane, not behind alice's jobs.
    assert (await worker.call(b, "release", lease["lease_id"])).json() == {"state": "queued"}
    assert (await bob.get(f"/api/jobs/{b}")).json()["position"] == 1
    # Cancelled while in the lane: it leaves it, and the queue goes on as before.
    assert (await bob.post(f"/api/jobs/{b}/cancel")).json()["state"] == "cancelled"
    assert await _lease_order(worker, 2) == a
    assert await worker.lease() is None
    for c in (admin, alice, bob, worker):
        await c.aclose()
