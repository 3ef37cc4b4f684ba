"""The participant-side queue additions the gateway builds ComfyUI's API on: chosen job ids,
ComfyUI's `number`, the queue and history listings, deleting history, the pool summary, and
events addressed to everyone."""

from __future__ import annotations

import orjson

from services.contracts import EVERYONE, JobState
from tests.queue_harness import WORKFLOW, QueueHarness, WorkerClient, events


async def _finish(worker: WorkerClient) -> str:
    lease = await worker.lease()
    assert lease is not None
    r = await worker.call(lease["job"]["id"], "start", lease["lease_id"])
    assert r.status_code == 200
    r = await worker.call(lease["job"]["id"], "complete", lease["lease_id"], outputs={})
    assert r.status_code == 204, r.text
    return lease["job"]["id"]


async def test_chosen_job_id_and_number(queue: QueueHarness) -> None:
    alice = await queue.client("alice")
    bob = await queue.client("bob")
    r = await alice.post("/api/jobs", json={"workflow": WORKFLOW, "job_id": "my-prompt.1"})
    assert r.status_code == 201, r.text
    first = r.json()
    assert first["id"] == "my-prompt.1" and first["number"] >= 1
    # Taken while the queue holds it, by anyone.
    r = await bob.post("/api/jobs", json={"workflow": WORKFLOW, "job_id": "my-prompt.1"})
    assert r.status_code == 409 and "taken" in r.json()["detail"]
    for bad in ("../x", "-x", "a" * 65, "a b"):
        r = await alice.post("/api/jobs", json={"workflow": WORKFLOW, "job_id": bad})
        assert r.status_code == 422, bad
    second = (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json()
    assert len(second["id"]) == 32 and second["number"] == first["number"] + 1
    listed = (await alice.get(f"/api/jobs/{second['id']}")).json()
    assert listed["number"] == second["number"]
    await alice.aclose()
    await bob.aclose()


async def test_live_and_finished_listings(queue: QueueHarness) -> None:
    alice = await queue.client("alice")
    bob = await queue.client("bob")
    admin = await queue.client("admin")
    ids = []
    for i in range(4):
        extra = {"client_id": f"c{i}"}
        r = await alice.post("/api/jobs", json={"workflow": WORKFLOW, "extra_data": extra})
        ids.append(r.json()["id"])
    await bob.post("/api/jobs", json={"workflow": WORKFLOW})
    worker = await WorkerClient.register(queue, "w0")
    done = [await _finish(worker)]  # alice's first (fair: alice, then bob)
    lease = await worker.lease()  # bob's, left running
    assert lease["job"]["user"] == "bob"
    done.append(await _finish(worker))  # alice's second

    r = await alice.get("/api/jobs?state=live&workflow=true")
    live = r.json()
    assert [j["id"] for j in live] == ids[2:] and r.headers["X-Total-Count"] == "2"
    assert live[0]["workflow"] == WORKFLOW and live[0]["extra_data"] == {"client_id": "c2"}
    assert [j["position"] for j in live] == [1, 2]
    finished = (await alice.get("/api/jobs?state=finished")).json()
    assert [j["id"] for j in finished] == done[::-1] and "workflow" not in finished[0]
    page = await alice.get("/api/jobs?state=finished&limit=1&offset=1")
    assert [j["id"] for j in page.json()] == [done[0]] and page.headers["X-Total-Count"] == "2"

    # Only admins name another user; they see that user's jobs.
    assert (await alice.get("/api/jobs?user=bob")).status_code == 403
    bobs = (await admin.get("/api/jobs?state=live&user=bob")).json()
    assert [j["state"] for j in bobs] == [JobState.LEASED]
    everyone = (await admin.get("/api/jobs?state=live")).json()
    assert {j["user"] for j in everyone} == {"alice", "bob"} and len(everyone) == 3
    for client in (alice, bob, admin):
        await client.aclose()
    await worker.aclose()


async def test_delete_and_clear_history(queue: QueueHarness) -> None:
    alice = await queue.client("alice")
    bob = await queue.client("bob")
    worker = await WorkerClient.register(queue, "w0")
    for _ in range(3):
        await alice.post("/api/jobs", json={"workflow": WORKFLOW})
    finished = [await _finish(worker), await _finish(worker)]
    queued = (await alice.get("/api/jobs?state=live")).json()[0]["id"]

    assert (await bob.delete(f"/api/jobs/{finished[0]}")).status_code == 404
    assert (await alice.delete(f"/api/jobs/{queued}")).status_code == 409
    assert (await alice.delete(f"/api/jobs/{finished[0]}")).status_code == 204
    assert (await alice.get(f"/api/jobs/{finished[0]}")).status_code == 404
    assert (await alice.delete(f"/api/jobs/{finished[0]}")).status_code == 404

    r = await alice.delete("/api/jobs?state=finished")
    assert r.status_code == 200 and r.json() == {"deleted": 1}
    assert (await alice.get("/api/jobs?state=finished")).json() == []
    assert [j["id"] for j in (await alice.get("/api/jobs")).json()] == [queued]
    await alice.aclose()
    await bob.aclose()
    await worker.aclose()


async def test_pool_summary(queue: QueueHarness) -> None:
    alice = await queue.client("alice")
    anonymous = await queue.client(None)
    assert (await anonymous.get("/api/pool")).status_code == 401
    empty = (await alice.get("/api/pool")).json()
    assert empty["workers_alive"] == 0 and empty["devices"] == [] and empty["queued_total"] == 0

    worker = await WorkerClient.register(queue, "w0")
    await alice.post("/api/jobs", json={"workflow": WORKFLOW})
    await _finish(worker)
    await alice.post("/api/jobs", json={"workflow": WORKFLOW})
    from services.queue.api import pool as pool_module

    pool_module._cache.clear()
    pool = (await alice.get("/api/pool")).json()
    assert pool["workers_alive"] == 1 and pool["queued_total"] == 1
    assert pool["mean_run_s"] is not None and pool["mean_run_s"] >= 0
    assert "w0" not in orjson.dumps(pool).decode()  # no worker ids
    await alice.aclose()
    await anonymous.aclose()
    await worker.aclose()


def test_pool_summary_merges_workers_system_stats() -> None:
    from services.queue.api.pool import summarize

    stats = {
        "system": {"comfyui_version": "0.3.64", "required_frontend_version": "1.27.10"},
        "devices": [{"name": "cuda:0 NVIDIA L40S", "type": "cuda", "vram_total": 1}],
    }
    pool = summarize(
        [
            {"system_stats": stats, "models": {"checkpoints": ["b.safetensors"]}},
            {"system_stats": stats, "models": ["a.safetensors"]},
        ],
        queued=3,
        mean_run_s=2.5,
    )
    assert pool.workers_alive == 2 and len(pool.devices) == 2
    assert pool.comfyui_version == "0.3.64" and pool.required_frontend_version == "1.27.10"
    assert pool.models == {"checkpoints": ["a.safetensors", "b.safetensors"]}


async def test_events_addressed_to_everyone_reach_every_participant(queue: QueueHarness) -> None:
    store = queue.app.state.ctx.store
    async with events(queue, "alice") as alice_events, events(queue, "bob") as bob_events:
        await store.redis.xadd(
            store.key("events"),
            {"type": "push_workflow", "job": "", "user": EVERYONE, "state": "", "data": "{}"},
        )
        await store.redis.xadd(
            store.key("events"),
            {"type": "push_workflow", "job": "", "user": "bob", "state": "", "data": "{}"},
        )
        first = await alice_events.until(lambda e: e["type"] == "push_workflow")
        assert first["user"] == EVERYONE
        seen = [await bob_events.until(lambda e: e["type"] == "push_workflow") for _ in range(2)]
        assert [e["user"] for e in seen] == [EVERYONE, "bob"]
        alice_client = await queue.client("alice")
        await alice_client.post("/api/jobs", json={"workflow": WORKFLOW})
        # alice's next event is her own job's, not bob's push.
        nxt = await alice_events.until(lambda e: True)
        assert nxt["type"] == "queued" and nxt["user"] == "alice"
        await alice_client.aclose()
