"""A job's whole life through the HTTP API: queued, leased, running, and each ending."""

from __future__ import annotations

from services.contracts import JobState
from tests.queue_harness import WORKFLOW, MakeQueue, QueueHarness, WorkerClient


async def test_submit_lease_run_complete(queue: QueueHarness) -> None:
    alice = await queue.client("alice")
    r = await alice.post("/api/jobs", json={"workflow": WORKFLOW, "client_id": "tab-1"})
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["state"] == JobState.QUEUED and job["user"] == "alice" and job["attempt"] == 0
    assert job["position"] == 1 and job["queued_at"] > 0 and job["client_id"] == "tab-1"

    worker = await WorkerClient.register(queue, "w0")
    lease = await worker.lease()
    assert lease is not None and lease["job"]["id"] == job["id"]
    assert lease["workflow"] == WORKFLOW and lease["job"]["attempt"] == 1
    assert (await alice.get(f"/api/jobs/{job['id']}")).json()["state"] == JobState.LEASED

    r = await worker.call(job["id"], "start", lease["lease_id"])
    assert r.status_code == 200 and r.json() == {"cancel": False}
    r = await worker.call(job["id"], "progress", lease["lease_id"], value=3, max=20, node="3")
    assert r.status_code == 200
    running = (await alice.get(f"/api/jobs/{job['id']}")).json()
    assert running["state"] == JobState.RUNNING and running["progress"]["value"] == 3
    assert running["started_at"] >= running["queued_at"] and running["worker"] == "w0"

    outputs = {"2": {"images": [{"filename": "t_00001_.png", "key": "alice/out/t.png"}]}}
    r = await worker.call(job["id"], "complete", lease["lease_id"], outputs=outputs)
    assert r.status_code == 204, r.text
    done = (await alice.get(f"/api/jobs/{job['id']}")).json()
    assert done["state"] == JobState.SUCCEEDED and done["outputs"] == outputs
    assert done["finished_at"] >= done["started_at"] and "position" not in done

    # The same result cannot be delivered twice.
    again = await worker.call(job["id"], "complete", lease["lease_id"], outputs={})
    assert again.status_code == 409 and "lease lost" in again.json()["detail"]
    listed = (await alice.get("/api/jobs")).json()
    assert [j["id"] for j in listed] == [job["id"]]
    await alice.aclose()
    await worker.aclose()


async def test_extra_data_travels_to_the_worker_but_not_into_listings(
    queue: QueueHarness,
) -> None:
    alice = await queue.client("alice")
    extra = {"extra_pnginfo": {"workflow": {"nodes": [{"id": 1}] * 50, "links": []}}}
    job = (await alice.post("/api/jobs", json={"workflow": WORKFLOW, "extra_data": extra})).json()
    assert "extra_data" not in job
    assert "extra_data" not in (await alice.get("/api/jobs")).json()[0]
    full = (await alice.get(f"/api/jobs/{job['id']}?workflow=true")).json()
    assert full["workflow"] == WORKFLOW and full["extra_data"] == extra
    worker = await WorkerClient.register(queue, "w0")
    lease = await worker.lease()
    assert lease["workflow"] == WORKFLOW and lease["extra_data"] == extra
    plain = (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json()
    await worker.call(job["id"], "complete", lease["lease_id"], outputs={})
    second = await worker.lease()
    assert second["job"]["id"] == plain["id"] and second["extra_data"] is None
    await alice.aclose()
    await worker.aclose()


async def test_graph_error_fails_without_retry(queue: QueueHarness) -> None:
    alice = await queue.client("alice")
    job = (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json()
    worker = await WorkerClient.register(queue, "w0")
    lease = await worker.lease()
    assert lease is not None
    error = {
        "type": "execution_error",
        "node_id": "5",
        "node_type": "LatentComposite",
        "exception_message": "The expanded size of the tensor (1) must match",
        "exception_type": "RuntimeError",
        "traceback": ["  File ..."],
    }
    r = await worker.call(job["id"], "fail", lease["lease_id"], error=error)
    assert r.status_code == 200 and r.json() == {"state": JobState.FAILED}
    failed = (await alice.get(f"/api/jobs/{job['id']}")).json()
    assert failed["state"] == JobState.FAILED and failed["error"] == error
    assert await worker.lease() is None
    await alice.aclose()
    await worker.aclose()


async def test_retryable_failure_requeues_until_attempts_run_out(make_queue: MakeQueue) -> None:
    async with make_queue(max_attempts=2) as queue:
        alice = await queue.client("alice")
        job = (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json()
        worker = await WorkerClient.register(queue, "w0")
        states = []
        for attempt in (1, 2):
            lease = await worker.lease()
            assert lease is not None and lease["job"]["attempt"] == attempt
            r = await worker.call(
                job["id"], "fail", lease["lease_id"], error={"message": "ComfyUI died"}, retry=True
            )
            states.append(r.json()["state"])
        assert states == [JobState.QUEUED, JobState.FAILED]
        assert (await alice.get(f"/api/jobs/{job['id']}")).json()["attempt"] == 2
        await alice.aclose()
        await worker.aclose()


async def test_cancel_queued_and_running(queue: QueueHarness) -> None:
    alice = await queue.client("alice")
    first = (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json()
    second = (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json()
    assert second["position"] == 2

    r = await alice.post(f"/api/jobs/{second['id']}/cancel")
    assert r.status_code == 200 and r.json()["state"] == JobState.CANCELLED

    worker = await WorkerClient.register(queue, "w0")
    lease = await worker.lease()
    assert lease["job"]["id"] == first["id"]
    await worker.call(first["id"], "start", lease["lease_id"])
    r = await alice.post(f"/api/jobs/{first['id']}/cancel")
    assert r.status_code == 200 and r.json()["cancel_requested"] is True
    assert r.json()["state"] == JobState.RUNNING

    # The worker learns it from its heartbeat, its progress call, and its next lease call.
    hb = await worker.http.post(
        "/api/worker/heartbeat",
        json={"worker_id": worker.worker_id,
              "leases": [{"job_id": first["id"], "lease_id": lease["lease_id"]}]},
    )
    assert hb.json() == {"cancel": [first["id"]], "lost": []}
    prog = await worker.call(first["id"], "progress", lease["lease_id"], value=1, max=2)
    assert prog.json() == {"cancel": True}
    nxt = await worker.http.post("/api/worker/lease", json={"worker_id": worker.worker_id})
    assert nxt.json()["cancel"] == [first["id"]]

    r = await worker.call(first["id"], "fail", lease["lease_id"], error={"message": "interrupted"})
    assert r.json() == {"state": JobState.CANCELLED}
    assert (await alice.get(f"/api/jobs/{first['id']}")).json()["state"] == JobState.CANCELLED
    r = await alice.post(f"/api/jobs/{first['id']}/cancel")
    assert r.status_code == 409
    await alice.aclose()
    await worker.aclose()


async def test_complete_folded_into_the_next_lease(queue: QueueHarness) -> None:
    alice = await queue.client("alice")
    first = (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json()
    second = (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json()
    worker = await WorkerClient.register(queue, "w0")
    lease = await worker.lease()
    outputs = {"2": {"images": [{"filename": "a.png"}]}}
    r = await worker.http.post("/api/worker/lease", json={
        "worker_id": worker.worker_id, "wait_s": 0,
        "complete": {"job_id": first["id"], "lease_id": lease["lease_id"], "outputs": outputs},
    })
    assert r.status_code == 200 and r.json()["lease"]["job"]["id"] == second["id"]
    done = (await alice.get(f"/api/jobs/{first['id']}")).json()
    assert done["state"] == JobState.SUCCEEDED and done["outputs"] == outputs
    # A refused completion takes no new lease.
    third = (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json()
    r = await worker.http.post("/api/worker/lease", json={
        "worker_id": worker.worker_id, "wait_s": 0,
        "complete": {"job_id": first["id"], "lease_id": lease["lease_id"]},
    })
    assert r.status_code == 409 and "lease lost" in r.json()["detail"]
    assert (await alice.get(f"/api/jobs/{third['id']}")).json()["state"] == JobState.QUEUED
    await alice.aclose()
    await worker.aclose()
