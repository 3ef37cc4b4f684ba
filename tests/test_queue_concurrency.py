"""Many workers at once, long-poll wake-ups, and two service replicas on one Redis."""

from __future__ import annotations

import asyncio
import collections
import time

import pytest

from services.contracts import LIVE_STATES, EventType, JobState
from tests.queue_harness import WORKFLOW, MakeQueue, QueueHarness, WorkerClient, events, start_queue

#: How long the thousand-job run may take before it counts as hung (it takes a few seconds).
RUN_LIMIT_S = 60


async def test_eight_workers_complete_a_thousand_jobs_exactly_once(make_queue: MakeQueue) -> None:
    total = 1000
    limits = {"max_queued_per_user": 1000, "max_running_per_user": 100, "history_per_user": 2000}
    async with make_queue(**limits) as queue:
        users = [await queue.client(u) for u in ("alice", "bob", "carol")]
        workers = [await WorkerClient.register(queue, f"w{i}") for i in range(8)]
        completed: list[str] = []
        refused = 0
        submitted: list[str] = []

        async def submit_all(client, n: int) -> None:
            for _ in range(n):
                r = await client.post("/api/jobs", json={"workflow": WORKFLOW})
                assert r.status_code == 201, r.text
                submitted.append(r.json()["id"])

        async def work(worker: WorkerClient) -> None:
            nonlocal refused
            # Until every job is accounted for; a refused completion counts, so that it fails
            # the asserts below instead of leaving the workers polling for a job that is gone.
            while len(completed) + refused < total:
                lease = await worker.lease(wait_s=0.5)
                if lease is None:
                    continue
                r = await worker.call(lease["job"]["id"], "complete", lease["lease_id"],
                                      outputs={"worker": worker.worker_id})
                if r.status_code == 204:
                    completed.append(lease["job"]["id"])
                else:
                    refused += 1

        # Submitting and claiming overlap, so claims race with submits and each other. A job
        # lost by the queue would keep the workers polling for ever: bound the run (it takes
        # a few seconds) and say what went missing.
        try:
            async with asyncio.timeout(RUN_LIMIT_S):
                await asyncio.gather(
                    submit_all(users[0], 400), submit_all(users[1], 300),
                    submit_all(users[2], 300), *(work(w) for w in workers),
                )
        except TimeoutError:
            missing = sorted(set(submitted) - set(completed))
            pytest.fail(
                f"after {RUN_LIMIT_S} s only {len(completed)} of {total} jobs were completed "
                f"({len(submitted)} submitted, {refused} completions refused); "
                f"{len(missing)} submitted jobs never completed, e.g. {missing[:3]}"
            )
        assert len(submitted) == total and refused == 0
        assert len(completed) == total
        assert collections.Counter(completed).most_common(1)[0][1] == 1
        assert set(completed) == set(submitted)
        admin = await queue.client("admin")
        overview = (await admin.get("/api/admin/overview")).json()
        assert overview["jobs"] == {state: 0 for state in LIVE_STATES}
        assert overview["finished"] == {JobState.SUCCEEDED: total}
        for c in (*users, admin):
            await c.aclose()
        for w in workers:
            await w.aclose()


async def test_long_poll_answers_when_a_job_arrives(queue: QueueHarness) -> None:
    worker = await WorkerClient.register(queue, "w0")
    alice = await queue.client("alice")
    async with events(queue, "admin") as stream:
        waiting = asyncio.create_task(worker.lease(wait_s=20))
        job = (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json()
        lease = await asyncio.wait_for(waiting, 5)  # far inside the 20 s long-poll
        assert lease is not None and lease["job"]["id"] == job["id"]
        await stream.until(lambda e: e["type"] == EventType.LEASED)
    await worker.aclose()
    await alice.aclose()


async def test_long_poll_with_nothing_to_do_ends_after_the_wait(queue: QueueHarness) -> None:
    worker = await WorkerClient.register(queue, "w0")
    started = time.monotonic()
    assert await worker.lease(wait_s=0.3) is None
    assert 0.25 <= time.monotonic() - started < 5
    await worker.aclose()


async def test_two_replicas_share_one_redis(redis_url: str) -> None:
    from tests.queue_harness import queue_settings

    settings = queue_settings(redis_url)
    async with start_queue(settings) as a, start_queue(settings) as b:
        worker = await WorkerClient.register(b, "w0")
        waiting = asyncio.create_task(worker.lease(wait_s=20))
        alice_a = await a.client("alice")
        async with events(b, "alice") as stream_b:
            job = (await alice_a.post("/api/jobs", json={"workflow": WORKFLOW})).json()
            lease = await asyncio.wait_for(waiting, 5)
            assert lease["job"]["id"] == job["id"]
            r = await worker.call(job["id"], "complete", lease["lease_id"], outputs={})
            assert r.status_code == 204
            await stream_b.until(
                lambda e: e["type"] == EventType.SUCCEEDED and e["job"] == job["id"]
            )
            assert [e["type"] for e in stream_b.seen] == [
                EventType.QUEUED, EventType.LEASED, EventType.SUCCEEDED,
            ]
        # A token issued by one replica is accepted by the other.
        alice_b = await b.client(None)
        alice_b.headers["Authorization"] = alice_a.headers["Authorization"]
        assert (await alice_b.get(f"/api/jobs/{job['id']}")).json()["state"] == JobState.SUCCEEDED
        for c in (alice_a, alice_b, worker):
            await c.aclose()
