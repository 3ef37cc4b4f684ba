"""The hot routes (submit, lease, complete) skip FastAPI's layers; they must not skip its
contract: OpenAPI, status codes, error shapes, and the combined complete-then-lease call."""

from __future__ import annotations

import httpx

from services.contracts import JobState
from services.queue.api.errors import STORAGE_DOWN
from services.queue.app import HOT_ROUTES
from tests.queue_harness import WORKFLOW, MakeQueue, QueueHarness, WorkerClient, cut_off_redis


async def test_openapi_declares_every_hot_route_as_served(queue: QueueHarness) -> None:
    async with httpx.AsyncClient(base_url=queue.base_url) as http:
        spec = (await http.get("/api/openapi.json")).json()
    for route in HOT_ROUTES:
        operation = spec["paths"][route.path][route.method.lower()]
        assert str(route.status_code) in operation["responses"], route.path
        body_ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert body_ref.endswith("/" + route.body.__name__), (route.path, body_ref)


async def test_lease_with_complete_records_the_result_and_hands_out_the_next_job(
    queue: QueueHarness,
) -> None:
    alice = await queue.client("alice")
    first, second = [
        (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json() for _ in range(2)
    ]
    worker = await WorkerClient.register(queue, "w0")
    lease = await worker.lease()
    assert lease["job"]["id"] == first["id"]
    outputs = {"9": {"images": [{"filename": "a.png", "key": "alice/out/a.png"}]}}
    done = {"job_id": first["id"], "lease_id": lease["lease_id"], "outputs": outputs}
    nxt = await worker.lease(complete=done)
    assert nxt is not None and nxt["job"]["id"] == second["id"]
    assert nxt["lease_id"] != lease["lease_id"]
    record = (await alice.get(f"/api/jobs/{first['id']}")).json()
    assert record["state"] == JobState.SUCCEEDED and record["outputs"] == outputs

    # Reporting the same result again is refused, and then nothing new is leased.
    third = (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json()
    again = await worker.lease_response(complete=done)
    assert again.status_code == 409 and "lease lost" in again.json()["detail"]
    assert (await alice.get(f"/api/jobs/{third['id']}")).json()["state"] == JobState.QUEUED
    await alice.aclose()
    await worker.aclose()


async def test_hot_routes_answer_503_when_redis_is_gone(make_queue: MakeQueue) -> None:
    async with make_queue() as queue:
        alice = await queue.client("alice")
        worker = await WorkerClient.register(queue, "w0")
        await cut_off_redis(queue)
        r = await alice.post("/api/jobs", json={"workflow": WORKFLOW})
        assert r.status_code == 503 and r.json()["detail"] == STORAGE_DOWN
        r = await worker.lease_response()
        assert r.status_code == 503 and r.json()["detail"] == STORAGE_DOWN
        await alice.aclose()
        await worker.aclose()


async def test_hot_routes_refuse_missing_and_wrong_credentials(queue: QueueHarness) -> None:
    worker = await WorkerClient.register(queue, "w0")
    async with httpx.AsyncClient(base_url=queue.base_url) as anonymous:
        r = await anonymous.post("/api/jobs", json={"workflow": WORKFLOW})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    r = await worker.http.post("/api/jobs", json={"workflow": WORKFLOW})
    assert r.status_code == 403 and "worker tokens may not" in r.json()["detail"]
    alice = await queue.client("alice")
    r = await alice.post("/api/worker/lease", json={"worker_id": "w0"})
    assert r.status_code == 403 and r.json()["detail"] == "worker token required"
    await alice.aclose()
    await worker.aclose()
