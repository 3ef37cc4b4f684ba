"""Health, readiness, metrics, OpenAPI, and bounded memory (history retention)."""

from __future__ import annotations

import httpx
import redis.asyncio as aioredis

from tests.queue_harness import WORKFLOW, MakeQueue, QueueHarness, WorkerClient, cut_off_redis


async def test_health_ready_and_openapi_are_public(queue: QueueHarness) -> None:
    async with httpx.AsyncClient(base_url=queue.base_url) as http:
        assert (await http.get("/api/health")).json() == {"status": "ok"}
        assert (await http.get("/api/ready")).json() == {"status": "ready"}
        spec = (await http.get("/api/openapi.json")).json()
        assert "/api/jobs" in spec["paths"] and "/api/worker/lease" in spec["paths"]


async def test_metrics_report_states_histograms_and_workers(queue: QueueHarness) -> None:
    alice, admin = await queue.client("alice"), await queue.client("admin")
    worker = await WorkerClient.register(queue, "w0")
    done = (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json()
    lease = await worker.lease()
    await worker.call(done["id"], "complete", lease["lease_id"], outputs={})
    await alice.post("/api/jobs", json={"workflow": WORKFLOW})
    await alice.post("/api/jobs", json={"workflow": WORKFLOW})
    text = (await admin.get("/api/metrics")).text
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines() if line and not line.startswith("#")
    }
    assert samples['comfyq_jobs{state="queued"}'] == 2
    assert samples['comfyq_jobs{state="running"}'] == 0
    assert samples['comfyq_jobs_finished{state="succeeded"}'] == 1
    assert samples['comfyq_workers{state="alive"}'] == 1
    assert samples["comfyq_queue_wait_seconds_count"] == 1
    assert samples["comfyq_run_seconds_count"] == 1
    for c in (alice, admin, worker):
        await c.aclose()


async def test_ready_fails_when_redis_is_gone(make_queue: MakeQueue) -> None:
    async with make_queue() as queue:
        await cut_off_redis(queue)
        async with httpx.AsyncClient(base_url=queue.base_url) as http:
            r = await http.get("/api/ready")
            assert r.status_code == 503 and "redis unreachable" in r.json()["detail"]


async def test_history_is_bounded_per_user_and_expires(
    make_queue: MakeQueue, redis_url: str
) -> None:
    limits = {"max_queued_per_user": 2, "max_running_per_user": 1, "history_per_user": 3,
              "retention_s": 3600}
    async with make_queue(**limits) as queue:
        alice = await queue.client("alice")
        worker = await WorkerClient.register(queue, "w0")
        ids = []
        for _ in range(5):
            job = (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json()
            lease = await worker.lease()
            await worker.call(job["id"], "complete", lease["lease_id"], outputs={})
            ids.append(job["id"])
        listed = [j["id"] for j in (await alice.get("/api/jobs")).json()]
        assert listed == ids[:1:-1]  # the three newest, newest first
        assert (await alice.get(f"/api/jobs/{ids[0]}")).status_code == 404
        r = aioredis.from_url(redis_url)
        ttl = await r.ttl(f"cq:job:{ids[-1]}")
        assert 3500 < ttl <= 3600
        assert await r.exists(f"cq:job:{ids[0]}", f"cq:wf:{ids[0]}") == 0
        await r.aclose()
        await alice.aclose()
        await worker.aclose()
