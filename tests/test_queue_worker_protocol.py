"""The worker protocol's additions (team brief 5.1): registration fields and node catalogues,
prefetch leases that never beat an idle worker, relayed ComfyUI messages, GPU time and history
on completion, declines, one-job release, and the heartbeat's health line."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from services.contracts import EventType, JobState
from tests.queue_harness import (
    WORKFLOW,
    MakeQueue,
    QueueHarness,
    WorkerClient,
    events,
    queue_settings,
    start_queue,
)


def _catalog(ckpts: list[str], extra_class: str | None = None) -> bytes:
    nodes: dict[str, Any] = {
        "CheckpointLoaderSimple": {
            "input": {"required": {"ckpt_name": [sorted(ckpts), {"tooltip": "x"}]}},
            "output": ["MODEL", "CLIP", "VAE"],
            "output_node": False,
        },
        "KSampler": {
            "input": {"required": {"sampler_name": [["euler", "ddim"], {}]}},
            "output": ["LATENT"],
        },
    }
    if extra_class:
        nodes[extra_class] = {"input": {"required": {}}, "output": [], "output_node": True}
    return json.dumps(nodes, indent=1).encode()  # ComfyUI's own bytes, whatever their layout


async def _register(queue: QueueHarness, name: str, catalog: bytes | None, **info: Any):
    worker = await WorkerClient.register(queue, name)
    body = {
        "gpu": "NVIDIA H100 80GB HBM3", "vram_total_mb": 81_559, "provider": "verda",
        "models": {"checkpoints": ["a.safetensors"]}, "hourly_eur": 2.1,
        "comfyui": {"version": "0.3.64", "url": "http://127.0.0.1:8188", "up": True},
        "system_stats": {"system": {"comfyui_version": "0.3.64"}, "devices": []},
        "catalog_hash": hashlib.sha256(catalog).hexdigest() if catalog else None, **info,
    }  # fmt: skip
    r = await worker.http.post("/api/worker/register", json=body)
    assert r.status_code == 200, r.text
    return worker, r.json()


async def _put_catalog(worker: WorkerClient, catalog: bytes) -> int:
    digest = hashlib.sha256(catalog).hexdigest()
    r = await worker.http.put(
        f"/api/worker/catalog/{digest}",
        content=gzip.compress(catalog),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    return r.status_code


async def test_catalogue_is_sent_once_by_hash_and_served_with_an_etag(queue: QueueHarness) -> None:
    alice, anon = await queue.client("alice"), await queue.client(None)
    r = await alice.get("/api/catalog")
    assert r.status_code == 404 and r.json() == {"detail": "no worker has reported its nodes yet"}
    assert (await anon.get("/api/catalog")).status_code == 401

    catalog = _catalog(["a.safetensors"])
    worker, registered = await _register(queue, "w0", catalog)
    assert registered["catalog_wanted"] is True
    wrong = hashlib.sha256(b"something else").hexdigest()
    r = await worker.http.put(f"/api/worker/catalog/{wrong}", content=catalog)
    assert r.status_code == 400 and "send the exact /object_info bytes" in r.json()["detail"]
    r = await worker.http.put("/api/worker/catalog/not-a-hash", content=catalog)
    assert r.status_code == 400
    r = await worker.http.put(
        f"/api/worker/catalog/{wrong}", content=b"not gzip", headers={"Content-Encoding": "gzip"}
    )
    assert r.status_code == 400 and "not valid gzip" in r.json()["detail"]
    assert await _put_catalog(worker, catalog) == 204
    _, again = await _register(queue, "w0", catalog)
    assert again["catalog_wanted"] is False  # the queue has it: not sent twice

    for reader in (alice, worker.http):  # people (the gateway) and workers may read it
        r = await reader.get("/api/catalog")
        assert r.status_code == 200 and r.content == catalog  # one worker: its exact bytes
        etag = r.headers["etag"]
        assert etag == f'"{hashlib.sha256(catalog).hexdigest()}"'
        r = await reader.get("/api/catalog", headers={"If-None-Match": etag})
        assert r.status_code == 304 and r.content == b""

    admin = await queue.client("admin")
    (info,) = (await admin.get("/api/admin/workers")).json()
    assert info["info"]["models"] == {"checkpoints": ["a.safetensors"]}
    assert info["info"]["vram_total_mb"] == 81_559 and info["info"]["hourly_eur"] == 2.1
    assert info["info"]["comfyui"] == {"version": "0.3.64", "url": "http://127.0.0.1:8188",
                                       "up": True}  # fmt: skip
    for c in (alice, anon, admin, worker):
        await c.aclose()


async def test_pool_catalogue_is_the_union_of_live_workers_then_the_last_known(
    make_queue: MakeQueue,
) -> None:
    async with make_queue(worker_lost_after_s=60) as queue:
        first, second = _catalog(["a.safetensors"]), _catalog(["b.safetensors"], "OnlyOnW1")
        w0, _ = await _register(queue, "w0", first)
        w1, _ = await _register(queue, "w1", second)
        assert await _put_catalog(w0, first) == 204
        assert await _put_catalog(w1, second) == 204
        alice = await queue.client("alice")
        r = await alice.get("/api/catalog")
        pool = r.json()
        assert pool["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"] == [
            ["a.safetensors", "b.safetensors"], {"tooltip": "x"},
        ]  # a model any live worker has is listed
        assert pool["KSampler"]["input"]["required"]["sampler_name"][0] == ["euler", "ddim"]
        assert "OnlyOnW1" in pool
        merged_etag = r.headers["etag"]
        assert (await alice.get("/api/catalog", headers={"If-None-Match": merged_etag})
                ).status_code == 304  # fmt: skip

        # Both go silent: the pool's catalogue is the last one any worker sent.
        await w0.http.post("/api/worker/release", json={"worker_id": "w0"})
        await w1.http.post("/api/worker/release", json={"worker_id": "w1"})
        r = await alice.get("/api/catalog", headers={"If-None-Match": merged_etag})
        assert r.status_code == 200 and r.content == second
        for c in (alice, w0, w1):
            await c.aclose()


async def _until_idle_marked(redis_url: str, worker_id: str) -> None:
    """Wait until the queue marked `worker_id` as waiting idle (it reads Redis, not a timer)."""
    client = aioredis.Redis.from_url(redis_url)
    async with asyncio.timeout(5):
        while await client.zscore("cq:idle", worker_id) is None:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    await client.aclose()


async def test_prefetch_is_refused_while_a_worker_waits_idle_on_any_replica(
    redis_url: str, replicas: tuple[QueueHarness, QueueHarness]
) -> None:
    a, b = replicas
    alice = await a.client("alice")
    busy = await WorkerClient.register(b, "w1")
    idle = await WorkerClient.register(a, "w0")
    # No one idles: a busy worker may prefetch.
    job = (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json()
    got = await busy.lease(prefetch=True)
    assert got is not None and got["job"]["id"] == job["id"]

    # w0 waits idle on replica a; a job w0 declined is there for the others.
    second = (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json()
    lease0 = await idle.lease()
    assert lease0["job"]["id"] == second["id"]
    r = await idle.call(second["id"], "decline", lease0["lease_id"],
                        error={"error": {"type": "x"}, "node_errors": {}})  # fmt: skip
    assert r.json() == {"state": JobState.QUEUED}
    waiting = asyncio.create_task(idle.lease(wait_s=1.0))
    await _until_idle_marked(redis_url, "w0")
    # Replica b refuses w1's prefetch while w0 waits on replica a.
    assert await busy.lease(prefetch=True) is None
    # An idle (non-prefetch) lease is not refused.
    assert (await busy.lease())["job"]["id"] == second["id"]
    assert await waiting is None
    for c in (alice, busy, idle):
        await c.aclose()


async def test_a_waiting_idle_worker_gets_the_job_before_a_prefetching_one(
    redis_url: str, replicas: tuple[QueueHarness, QueueHarness]
) -> None:
    a, b = replicas
    alice = await a.client("alice")
    busy = await WorkerClient.register(a, "w1")
    idle = await WorkerClient.register(b, "w0")
    async with asyncio.timeout(10):
        prefetching = asyncio.create_task(busy.lease(wait_s=8, prefetch=True))
        idling = asyncio.create_task(idle.lease(wait_s=8))
        await _until_idle_marked(redis_url, "w0")
        first = (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json()
        got = await idling
        assert got["job"]["id"] == first["id"]
        assert not prefetching.done()
        # w0 is busy now and no one idles: the prefetching worker gets the next one.
        second = (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json()
        assert (await prefetching)["job"]["id"] == second["id"]
    for c in (alice, busy, idle):
        await c.aclose()


async def test_relayed_comfy_messages_are_events_in_order(queue: QueueHarness) -> None:
    alice = await queue.client("alice")
    worker = await WorkerClient.register(queue, "w0")
    job = (await alice.post("/api/jobs", json={"workflow": WORKFLOW, "client_id": "tab-1"})).json()
    lease = await worker.lease()
    prompt_id = job["id"]
    messages = [
        {"type": "execution_start", "data": {"prompt_id": prompt_id, "timestamp": 1}},
        {"type": "execution_cached", "data": {"nodes": [], "prompt_id": prompt_id,
                                              "timestamp": 2}},
        {"type": "progress", "data": {"value": 3, "max": 20, "prompt_id": prompt_id,
                                      "node": "3"}},
        {"type": "progress_state", "data": {"prompt_id": prompt_id, "nodes": {"3": {
            "value": 1.0, "max": 1.0, "state": "running"}}}},
    ]  # fmt: skip
    async with events(queue, "alice") as stream:
        r = await worker.call(prompt_id, "events", lease["lease_id"], messages=messages)
        assert r.status_code == 200 and r.json() == {"cancel": False}
        await stream.until(lambda e: e["type"] == EventType.COMFY
                           and e["data"]["type"] == "progress_state")  # fmt: skip
        seen = [e for e in stream.seen if e["job"] == prompt_id]
        assert [e["type"] for e in seen] == [EventType.RUNNING] + [EventType.COMFY] * 4
        assert [e["data"] for e in seen[1:]] == [{**m, "client_id": "tab-1"} for m in messages]
        assert seen[2]["data"]["data"]["nodes"] == []  # ComfyUI's shapes survive: [] and 1.0
        assert seen[4]["data"]["data"]["nodes"]["3"]["value"] == 1.0
        assert all(e["state"] == JobState.RUNNING and e["user"] == "alice" for e in seen)
    record = (await alice.get(f"/api/jobs/{prompt_id}")).json()
    assert record["state"] == JobState.RUNNING
    assert record["progress"] == {"value": 3, "max": 20, "node": "3"}

    assert (await alice.post(f"/api/jobs/{prompt_id}/cancel")).status_code == 200
    r = await worker.call(prompt_id, "events", lease["lease_id"], messages=[])
    assert r.json() == {"cancel": True}
    r = await worker.call(prompt_id, "events", "not-the-lease", messages=[])
    assert r.status_code == 409
    r = await worker.call(prompt_id, "events", lease["lease_id"],
                          messages=[{"type": "status", "data": {}}])  # fmt: skip
    assert r.status_code == 422 and "messages" in r.json()["detail"]
    for c in (alice, worker):
        await c.aclose()


async def test_completion_and_failure_keep_gpu_time_history_and_number(
    queue: QueueHarness,
) -> None:
    alice = await queue.client("alice")
    worker = await WorkerClient.register(queue, "w0")
    ids = [(await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json() for _ in range(3)]
    assert [j["number"] for j in ids] == [1, 2, 3]
    history = {"status": {"status_str": "success", "completed": True, "messages": []},
               "meta": {"9": {"node_id": "9"}}}  # fmt: skip
    first = await worker.lease()
    assert first["job"]["number"] == 1
    r = await worker.call(first["job"]["id"], "complete", first["lease_id"], outputs={},
                          gpu_ms=1234, history=history)  # fmt: skip
    assert r.status_code == 204
    second = await worker.lease()
    third = await worker.lease(complete={"job_id": second["job"]["id"],
                                         "lease_id": second["lease_id"], "outputs": {},
                                         "gpu_ms": 55, "history": history})  # fmt: skip
    error = {"prompt_id": third["job"]["id"], "node_id": "1", "exception_type": "RuntimeError"}
    r = await worker.call(third["job"]["id"], "fail", third["lease_id"], error=error, gpu_ms=7,
                          history={"status": {"status_str": "error"}, "meta": {}})  # fmt: skip
    assert r.json() == {"state": JobState.FAILED}
    records = [(await alice.get(f"/api/jobs/{j['id']}")).json() for j in ids]
    assert [(j["gpu_ms"], j["number"]) for j in records] == [(1234, 1), (55, 2), (7, 3)]
    assert records[0]["history"] == history and records[2]["error"] == error
    for c in (alice, worker):
        await c.aclose()


async def test_a_declined_job_goes_to_another_worker_without_spending_an_attempt(
    queue: QueueHarness,
) -> None:
    alice = await queue.client("alice")
    lacking = await WorkerClient.register(queue, "w0")
    having = await WorkerClient.register(queue, "w1")
    await having.lease()  # w1 is live (it asked for work)
    job = (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json()
    lease = await lacking.lease()
    error = {"error": {"type": "prompt_outputs_failed_validation"}, "node_errors": {"4": {}}}
    async with events(queue, "alice") as stream:
        r = await lacking.call(job["id"], "decline", lease["lease_id"], error=error)
        assert r.json() == {"state": JobState.QUEUED}
        declined = await stream.until(lambda e: e["type"] == EventType.DECLINED)
        assert declined["data"] == {"worker": "w0", "reason": "declined"}
    assert await lacking.lease() is None  # never offered to w0 again
    other = (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json()
    assert (await lacking.lease())["job"]["id"] == other["id"]  # w0 gets the others
    again = await having.lease()
    assert again["job"]["id"] == job["id"] and again["job"]["attempt"] == 1
    for c in (alice, lacking, having):
        await c.aclose()


async def test_a_job_every_live_worker_declined_fails_with_comfyuis_error(
    make_queue: MakeQueue,
) -> None:
    async with make_queue(worker_lost_after_s=1.0) as queue:
        alice = await queue.client("alice")
        w0, w1 = await WorkerClient.register(queue, "w0"), await WorkerClient.register(queue, "w1")
        error = {"error": {"type": "prompt_outputs_failed_validation", "message": "..."},
                 "node_errors": {"4": {"errors": [{"type": "value_not_in_list"}]}}}  # fmt: skip
        job = (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json()
        for worker, state in ((w0, JobState.QUEUED), (w1, JobState.FAILED)):
            lease = await worker.lease()
            r = await worker.call(job["id"], "decline", lease["lease_id"], error=error)
            assert r.json() == {"state": state}
        record = (await alice.get(f"/api/jobs/{job['id']}")).json()
        assert record["state"] == JobState.FAILED and record["error"] == error

        # The only worker that had not declined goes away: the reaper fails the job.
        late = (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json()
        lease = await w0.lease()
        assert (await w0.call(late["id"], "decline", lease["lease_id"], error=error)).json() == {
            "state": JobState.QUEUED}  # fmt: skip
        async with events(queue, "alice") as stream:
            await w1.http.post("/api/worker/release", json={"worker_id": "w1"})
            failed = await stream.until(lambda e: e["type"] == EventType.FAILED)
        assert failed["job"] == late["id"] and failed["data"] == error
        for c in (alice, w0, w1):
            await c.aclose()


async def test_one_job_is_released_without_spending_its_attempt(queue: QueueHarness) -> None:
    alice = await queue.client("alice")
    worker = await WorkerClient.register(queue, "w0")
    running = (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json()
    prefetched = (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json()
    first, second = await worker.lease(), await worker.lease(prefetch=True)
    assert second["job"]["id"] == prefetched["id"]
    r = await worker.call(prefetched["id"], "release", second["lease_id"])
    assert r.json() == {"state": JobState.QUEUED}
    assert (await worker.call(prefetched["id"], "release", second["lease_id"])).status_code == 409
    record = (await alice.get(f"/api/jobs/{prefetched['id']}")).json()
    assert record["state"] == JobState.QUEUED and record["attempt"] == 0
    assert (await alice.get(f"/api/jobs/{running['id']}")).json()["state"] == JobState.LEASED
    assert first["job"]["id"] == running["id"]
    for c in (alice, worker):
        await c.aclose()


async def test_heartbeat_status_is_the_admin_views_health_line(queue: QueueHarness) -> None:
    admin = await queue.client("admin")
    worker = await WorkerClient.register(queue, "w0")
    status = {"state": "idle", "job": None, "comfyui": "down", "jobs_done": 3,
              "comfyui_url": "http://127.0.0.1:8188"}  # fmt: skip
    r = await worker.http.post("/api/worker/heartbeat",
                               json={"worker_id": "w0", "leases": [], "status": status})
    assert r.status_code == 200
    (info,) = (await admin.get("/api/admin/workers")).json()
    assert info["status"] == status
    r = await worker.http.post("/api/worker/heartbeat", json={
        "worker_id": "w0", "status": {**status, "state": "asleep"}})  # fmt: skip
    assert r.status_code == 422
    for c in (admin, worker):
        await c.aclose()



async def test_a_waiting_heartbeat_answers_at_once_when_a_held_job_is_cancelled(
    queue: QueueHarness,
) -> None:
    """A job queued inside ComfyUI behind the running one sends nothing, so its cancel comes
    by heartbeat: a long-poll that answers as soon as the owner cancels any job the worker
    holds, including one leased after the heartbeat was sent."""
    alice = await queue.client("alice")
    worker = await WorkerClient.register(queue, "w0")
    running = (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json()
    first = await worker.lease()
    listed = [{"job_id": running["id"], "lease_id": first["lease_id"]}]

    async def heartbeat(wait_s: float, cancelling: list[str] | None = None) -> dict[str, Any]:
        r = await worker.http.post(
            "/api/worker/heartbeat",
            json={"worker_id": "w0", "leases": listed, "wait_s": wait_s,
                  "cancelling": cancelling or []},
        )  # fmt: skip
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    assert await heartbeat(0.2) == {"cancel": [], "lost": []}  # nothing happened: after wait_s
    waiting = asyncio.create_task(heartbeat(30))
    prefetched = (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json()
    second = await worker.lease(prefetch=True)  # after the heartbeat went out: not listed
    assert second["job"]["id"] == prefetched["id"]
    assert not waiting.done()
    r = await alice.post(f"/api/jobs/{prefetched['id']}/cancel")
    assert r.status_code == 200, r.text
    async with asyncio.timeout(5):  # well under the heartbeat's 30 s
        assert await waiting == {"cancel": [prefetched["id"]], "lost": []}
    # A cancel the worker already acts on is not news; the next one is.
    assert await heartbeat(0.2, [prefetched["id"]]) == {"cancel": [prefetched["id"]], "lost": []}
    waiting = asyncio.create_task(heartbeat(30, [prefetched["id"]]))
    await asyncio.sleep(0)
    assert not waiting.done()
    assert (await alice.post(f"/api/jobs/{running['id']}/cancel")).status_code == 200
    async with asyncio.timeout(5):
        answer = await waiting
    assert sorted(answer["cancel"]) == sorted([running["id"], prefetched["id"]])
    for c in (alice, worker):
        await c.aclose()


async def test_a_released_worker_is_leased_nothing_and_stays_gone(redis_url: str) -> None:
    """A worker that stops drops its waiting long-poll and releases: the handler still waiting
    for it must not lease it the next job, and a late heartbeat must not bring it back."""
    async with start_queue(queue_settings(redis_url)) as queue:
        alice, admin = await queue.client("alice"), await queue.client("admin")
        gone = await WorkerClient.register(queue, "w0")
        async with asyncio.timeout(15):
            stale = asyncio.create_task(gone.lease(wait_s=3))
            await _until_idle_marked(redis_url, "w0")  # its poll waits in the handler
            r = await gone.http.post("/api/worker/release", json={"worker_id": "w0"})
            assert r.status_code == 200, r.text
            other = await WorkerClient.register(queue, "w1")
            fresh = asyncio.create_task(other.lease(wait_s=8))
            await _until_idle_marked(redis_url, "w1")
            job = (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json()
            assert (await fresh)["job"]["id"] == job["id"]
            with pytest.raises(httpx.HTTPStatusError) as refused:
                await stale  # the poll it dropped: had its client stayed, "not registered"
            assert refused.value.response.status_code == 403
            r = await gone.http.post(
                "/api/worker/heartbeat", json={"worker_id": "w0", "leases": []}
            )
            assert r.status_code == 200
        listed = [w["id"] for w in (await admin.get("/api/admin/workers")).json()]
        assert listed == ["w1"]
        for c in (alice, admin, gone, other):
            await c.aclose()
