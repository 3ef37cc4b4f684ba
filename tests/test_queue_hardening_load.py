"""Load and worker-id hardening (issue 13, defects 1 and 8)."""

from __future__ import annotations

import asyncio

import httpx

from services.queue.app import redis_pool
from tests.queue_harness import QueueHarness, WorkerClient


async def test_300_concurrent_requests_are_all_answered(queue: QueueHarness) -> None:
    """More requests in flight than the pool has connections: they wait, none fails."""
    pool = redis_pool(queue.settings)
    assert pool.max_connections < 300  # the burst really outnumbers the connections
    await pool.disconnect()
    alice = await queue.client("alice")
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
    async with httpx.AsyncClient(
        base_url=queue.base_url, headers=alice.headers, timeout=60, limits=limits
    ) as http:
        async with asyncio.timeout(60):
            answers = await asyncio.gather(*(http.get("/api/jobs") for _ in range(300)))
    codes = [r.status_code for r in answers]
    assert codes == [200] * 300, {c: codes.count(c) for c in set(codes)}
    await alice.aclose()


BAD_IDS = ["w0/../w1", "w0/a\nb", "w0/" + "x" * 100_000, "w0/", "w0//x", "w1", "w0x"]


async def test_lease_and_heartbeat_take_only_registered_well_formed_ids(
    queue: QueueHarness,
) -> None:
    worker = await WorkerClient.register(queue, "w0", instance="gpu-1")
    redis = queue.app.state.ctx.store.redis
    before = sorted(await redis.keys("*worker*"))
    for bad in [*BAD_IDS, "w0/never-registered", "w0"]:
        for path, body in [
            ("/api/worker/lease", {"worker_id": bad, "wait_s": 0}),
            ("/api/worker/heartbeat", {"worker_id": bad, "leases": []}),
            ("/api/worker/release", {"worker_id": bad}),
        ]:
            r = await worker.http.post(path, json=body)
            assert r.status_code == 403, (path, bad[:20], r.status_code)
            assert len(r.text) < 1000 and r.json()["detail"]
    assert sorted(await redis.keys("*worker*")) == before  # nothing was created
    assert (await worker.lease_response()).status_code == 200
    r = await worker.http.post(
        "/api/worker/heartbeat", json={"worker_id": worker.worker_id, "leases": []}
    )
    assert r.status_code == 200
    await worker.aclose()


async def test_replay_delivers_only_own_events_and_bad_since_is_4400(
    queue: QueueHarness,
) -> None:
    from websockets.asyncio.client import connect

    from tests.queue_harness import WORKFLOW, events

    alice, bob = await queue.client("alice"), await queue.client("bob")
    for _ in range(3):
        assert (await bob.post("/api/jobs", json={"workflow": WORKFLOW})).status_code == 201
    mine = (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json()["id"]
    async with events(queue, "alice", since="0-0") as stream:
        event = await stream.until(lambda e: e["job"] == mine)
        assert event["user"] == "alice" and all(e["user"] == "alice" for e in stream.seen)
    token = await queue.token("alice")
    for since in ["99999999999999999999-0", "1-99999999999999999999", "abc"]:
        url = queue.ws_url(f"/api/events?since={since}")
        async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
            async with asyncio.timeout(10):
                await ws.wait_closed()
            assert ws.close_code == 4400, since
    await alice.aclose()
    await bob.aclose()
