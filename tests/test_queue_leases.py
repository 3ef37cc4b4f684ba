"""Dead workers: expired leases requeue the job, late results are refused, retries end."""

from __future__ import annotations

from services.contracts import EventType, JobState
from tests.queue_harness import WORKFLOW, MakeQueue, QueueHarness, WorkerClient, events


async def test_silent_worker_job_is_requeued_and_finished_by_another(make_queue: MakeQueue) -> None:
    async with make_queue(lease_ttl_s=0.3, worker_lost_after_s=0.2, max_attempts=3) as queue:
        alice = await queue.client("alice")
        admin = await queue.client("admin")
        async with events(queue, "admin") as stream:
            job = (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json()
            dead = await WorkerClient.register(queue, "w0")
            first = await dead.lease()
            assert (await dead.call(job["id"], "start", first["lease_id"])).status_code == 200
            # w0 now goes silent: no heartbeat. The reaper requeues the job at the head.
            requeued = await stream.until(
                lambda e: e["type"] == EventType.REQUEUED and e["job"] == job["id"]
            )
            assert requeued["data"]["reason"] == "lease_expired"
            assert requeued["data"]["worker"] == "w0"

            workers = {w["id"]: w for w in (await admin.get("/api/admin/workers")).json()}
            assert workers["w0"]["state"] == "lost"

            alive = await WorkerClient.register(queue, "w1")
            second = await alive.lease()
            assert second["job"]["id"] == job["id"] and second["job"]["attempt"] == 2
            r = await alive.call(job["id"], "complete", second["lease_id"], outputs={"by": "w1"})
            assert r.status_code == 204

            late = await dead.call(job["id"], "complete", first["lease_id"], outputs={"by": "w0"})
            assert late.status_code == 409
            done = (await alice.get(f"/api/jobs/{job['id']}")).json()
            assert done["state"] == JobState.SUCCEEDED and done["outputs"] == {"by": "w1"}
            assert done["worker"] == "w1" and done["attempt"] == 2
            types = [e["type"] for e in stream.seen if e["job"] == job["id"]]
            await stream.until(lambda e: e["type"] == EventType.SUCCEEDED and e["job"] == job["id"])
            types = [e["type"] for e in stream.seen if e["job"] == job["id"]]
            assert types == [
                EventType.QUEUED, EventType.LEASED, EventType.RUNNING,
                EventType.REQUEUED, EventType.LEASED, EventType.SUCCEEDED,
            ]
        for c in (alice, admin, dead, alive):
            await c.aclose()


async def test_job_fails_with_a_reason_past_the_retry_limit(make_queue: MakeQueue) -> None:
    async with make_queue(lease_ttl_s=0.2, max_attempts=2) as queue:
        alice = await queue.client("alice")
        async with events(queue, "alice") as stream:
            job = (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json()
            for name in ("w0", "w1"):
                worker = await WorkerClient.register(queue, name)
                assert (await worker.lease())["job"]["id"] == job["id"]
                await worker.aclose()  # and never heard from again
                await stream.until(
                    lambda e: e["job"] == job["id"]
                    and e["type"] in (EventType.REQUEUED, EventType.FAILED)
                )
            assert stream.seen[-1]["type"] == EventType.FAILED
        failed = (await alice.get(f"/api/jobs/{job['id']}")).json()
        assert failed["state"] == JobState.FAILED and failed["attempt"] == 2
        assert failed["error"]["type"] == "lease_expired"
        assert "gave up after 2 attempts" in failed["error"]["message"]
        await alice.aclose()


async def test_heartbeats_keep_a_long_job_alive(make_queue: MakeQueue) -> None:
    async with make_queue(lease_ttl_s=0.3) as queue:
        alice = await queue.client("alice")
        job = (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json()
        worker = await WorkerClient.register(queue, "w0")
        lease = await worker.lease()
        held = [{"job_id": job["id"], "lease_id": lease["lease_id"]}]
        async with events(queue, "alice") as stream:
            # Heartbeat across several lease lifetimes, paced by the server's own events:
            # each progress step is published, and we wait for it before the next beat.
            for step in range(8):
                r = await worker.http.post(
                    "/api/worker/heartbeat", json={"worker_id": worker.worker_id, "leases": held}
                )
                assert r.json() == {"cancel": [], "lost": []}
                await worker.call(job["id"], "progress", lease["lease_id"], value=step, max=8)
                await stream.until(lambda e, s=step: e["type"] == EventType.PROGRESS
                                   and e["data"]["value"] == s)
        r = await worker.call(job["id"], "complete", lease["lease_id"], outputs={})
        assert r.status_code == 204
        await alice.aclose()
        await worker.aclose()


async def test_release_requeues_without_spending_an_attempt(queue: QueueHarness) -> None:
    alice = await queue.client("alice")
    job = (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json()
    worker = await WorkerClient.register(queue, "w0")
    lease = await worker.lease()
    r = await worker.http.post("/api/worker/release", json={"worker_id": worker.worker_id})
    assert r.json() == {"released": 1}
    again = (await alice.get(f"/api/jobs/{job['id']}")).json()
    assert again["state"] == JobState.QUEUED and again["attempt"] == 0 and again["position"] == 1
    late = await worker.call(job["id"], "complete", lease["lease_id"], outputs={})
    assert late.status_code == 409
    await alice.aclose()
    await worker.aclose()
