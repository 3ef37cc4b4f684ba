"""Scheduling modes, fairness and per-user limits."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis

from services.contracts import EventType, Mode, Role
from tests.queue_harness import WORKFLOW, MakeQueue, QueueHarness, WorkerClient, submit_many


async def _set_mode(queue: QueueHarness, mode: str) -> None:
    admin = await queue.client("admin")
    r = await admin.put("/api/admin/mode", json={"mode": mode})
    assert r.status_code == 200 and r.json() == {"mode": mode}
    await admin.aclose()


async def _drain(worker: WorkerClient, n: int) -> list[dict[str, Any]]:
    """Lease and complete n jobs; returns the leased job records in order."""
    out = []
    for _ in range(n):
        lease = await worker.lease()
        assert lease is not None
        out.append(lease["job"])
        r = await worker.call(lease["job"]["id"], "complete", lease["lease_id"], outputs={})
        assert r.status_code == 204
    return out


async def test_fair_mode_serves_the_one_job_user_within_two(make_queue: MakeQueue) -> None:
    """User A queues 50 jobs, then B queues 1: B's job is among the next 2 claimed."""
    async with make_queue(max_queued_per_user=100, max_running_per_user=100) as queue:
        await _set_mode(queue, Mode.FAIR)
        alice, bob = await queue.client("alice"), await queue.client("bob")
        a_ids = await submit_many(alice, 50)
        (b_id,) = await submit_many(bob, 1)
        assert (await bob.get(f"/api/jobs/{b_id}")).json()["position"] <= 2
        worker = await WorkerClient.register(queue, "w0")
        served = [j["id"] for j in await _drain(worker, 2)]
        assert b_id in served
        # Alice's own jobs stay in her submission order.
        rest = [j["id"] for j in await _drain(worker, 49)]
        assert [i for i in served + rest if i != b_id] == a_ids
        for c in (alice, bob, worker):
            await c.aclose()


async def test_fair_mode_round_robins_between_users(make_queue: MakeQueue) -> None:
    async with make_queue(max_running_per_user=100) as queue:
        await _set_mode(queue, Mode.FAIR)
        alice, bob = await queue.client("alice"), await queue.client("bob")
        await submit_many(alice, 4)
        await submit_many(bob, 4)
        worker = await WorkerClient.register(queue, "w0")
        users = [j["user"] for j in await _drain(worker, 8)]
        # Alice was first in line; after that they alternate.
        assert users == ["alice", "bob"] * 4
        for c in (alice, bob, worker):
            await c.aclose()


async def test_fifo_mode_serves_in_submission_order(make_queue: MakeQueue) -> None:
    async with make_queue(max_queued_per_user=100, max_running_per_user=100) as queue:
        await _set_mode(queue, Mode.FIFO)
        alice, bob = await queue.client("alice"), await queue.client("bob")
        order = await submit_many(alice, 5) + await submit_many(bob, 1)
        order += await submit_many(alice, 2)
        last = order[-1]
        assert (await alice.get(f"/api/jobs/{last}")).json()["position"] == 8
        worker = await WorkerClient.register(queue, "w0")
        assert [j["id"] for j in await _drain(worker, 8)] == order
        for c in (alice, bob, worker):
            await c.aclose()


async def test_priority_mode_serves_instructors_first_fair_within_level(
    make_queue: MakeQueue,
) -> None:
    async with make_queue(max_running_per_user=100) as queue:
        await _set_mode(queue, Mode.PRIORITY)
        alice, bob = await queue.client("alice"), await queue.client("bob")
        carol, admin = await queue.client("carol"), await queue.client("admin")
        await submit_many(alice, 2)
        await submit_many(bob, 2)
        await submit_many(carol, 2)  # instructor: level 1
        r = await admin.post("/api/jobs", json={"workflow": WORKFLOW})  # admin: level 2
        admin_job = r.json()
        assert admin_job["priority"] == 2
        # An admin may submit on a participant's behalf; it runs at that user's level.
        r = await admin.post("/api/jobs", json={"workflow": WORKFLOW, "user": "alice"})
        assert r.status_code == 201 and r.json()["user"] == "alice" and r.json()["priority"] == 0
        worker = await WorkerClient.register(queue, "w0")
        jobs = await _drain(worker, 8)
        assert [j["user"] for j in jobs[:3]] == ["admin", "carol", "carol"]
        assert [j["priority"] for j in jobs] == [2, 1, 1, 0, 0, 0, 0, 0]
        assert [j["user"] for j in jobs[3:7]] == ["alice", "bob", "alice", "bob"]
        for c in (alice, bob, carol, admin, worker):
            await c.aclose()


async def test_mode_switch_takes_effect_at_the_next_lease(make_queue: MakeQueue) -> None:
    async with make_queue(max_queued_per_user=100, max_running_per_user=100) as queue:
        await _set_mode(queue, Mode.FIFO)
        alice, bob = await queue.client("alice"), await queue.client("bob")
        await submit_many(alice, 3)
        await submit_many(bob, 1)
        worker = await WorkerClient.register(queue, "w0")
        assert [j["user"] for j in await _drain(worker, 1)] == ["alice"]
        await _set_mode(queue, Mode.FAIR)  # Bob has never been served: he is next.
        assert [j["user"] for j in await _drain(worker, 1)] == ["bob"]
        for c in (alice, bob, worker):
            await c.aclose()


async def test_queued_limit_gives_429(make_queue: MakeQueue) -> None:
    async with make_queue(max_queued_per_user=3) as queue:
        alice, bob = await queue.client("alice"), await queue.client("bob")
        await submit_many(alice, 3)
        r = await alice.post("/api/jobs", json={"workflow": WORKFLOW})
        assert r.status_code == 429
        assert "3 queued jobs" in r.json()["detail"] and "limit 3" in r.json()["detail"]
        await submit_many(bob, 1)  # the limit is per user
        assert len((await alice.get("/api/jobs")).json()) == 3  # nothing half-written
        for c in (alice, bob):
            await c.aclose()


async def test_running_limit_parks_the_user_until_a_job_ends(make_queue: MakeQueue) -> None:
    async with make_queue(max_running_per_user=1) as queue:
        await _set_mode(queue, Mode.FIFO)
        alice, bob = await queue.client("alice"), await queue.client("bob")
        a1, a2 = await submit_many(alice, 2)
        (b1,) = await submit_many(bob, 1)
        w1 = await WorkerClient.register(queue, "w0")
        w2 = await WorkerClient.register(queue, "w1")
        first = await w1.lease()
        assert first["job"]["id"] == a1
        # FIFO would give Alice's second job, but she is at her running limit.
        second = await w2.lease()
        assert second["job"]["id"] == b1
        assert await w2.lease() is None
        await w1.call(a1, "complete", first["lease_id"], outputs={})
        third = await w2.lease()
        assert third["job"]["id"] == a2
        for c in (alice, bob, w1, w2):
            await c.aclose()


async def test_a_service_started_with_another_running_limit_applies_it(
    make_queue: MakeQueue,
) -> None:
    """The scripts keep the ready sets up to date one transition at a time, under the limit
    of the moment. A service that starts with a different limit rebuilds them: a user parked
    under the old limit is served under a higher one, and one over a lower limit is parked."""
    async with make_queue(max_running_per_user=1) as queue:
        await _set_mode(queue, Mode.FIFO)
        alice, bob = await queue.client("alice"), await queue.client("bob")
        a1, a2 = await submit_many(alice, 2)
        b1, b2, _b3 = await submit_many(bob, 3)  # b3 still waits at the end
        w0, w1 = [await WorkerClient.register(queue, n) for n in ("w0", "w1")]
        assert (await w0.lease())["job"]["id"] == a1  # Alice is at her limit now
        assert (await w1.lease())["job"]["id"] == b1
        for c in (alice, bob, w0, w1):
            await c.aclose()
    async with make_queue(max_running_per_user=2) as queue:
        w2 = await WorkerClient.register(queue, "w1", instance="2")
        assert (await w2.lease())["job"]["id"] == a2  # no job ended, yet Alice is served
        assert (await w2.lease())["job"]["id"] == b2
        await w2.aclose()
    async with make_queue(max_running_per_user=1) as queue:
        w3 = await WorkerClient.register(queue, "w1", instance="3")
        assert await w3.lease() is None  # Bob has b3 queued, but runs two jobs: parked
        await w3.aclose()


async def test_a_freed_slot_wakes_a_parked_worker_and_nothing_else_does(
    make_queue: MakeQueue, redis_url: str
) -> None:
    """Only transitions that make a job claimable wake a long-polling worker (the scripts
    mark those events `wake=1`): a worker woken for nothing would just claim in vain."""
    async with make_queue(max_running_per_user=1) as queue:
        alice, bob = await queue.client("alice"), await queue.client("bob")
        w1 = await WorkerClient.register(queue, "w0")
        w2 = await WorkerClient.register(queue, "w1")
        (b1,) = await submit_many(bob, 1)
        lease_b = await w1.lease()
        await w1.call(b1, "complete", lease_b["lease_id"], outputs={})  # frees nothing waiting
        a1, a2 = await submit_many(alice, 2)
        first = await w1.lease()
        assert first["job"]["id"] == a1
        parked = asyncio.create_task(w2.lease(wait_s=20))  # a2 waits behind Alice's limit
        await w1.call(a1, "complete", first["lease_id"], outputs={})
        second = await asyncio.wait_for(parked, 5)  # woken by the completion, not the timeout
        assert second["job"]["id"] == a2

        redis = aioredis.from_url(redis_url)
        entries = await redis.xrange(queue.settings.key_prefix + "events")
        await redis.aclose()
        wakes = [
            (f[b"type"].decode(), f[b"job"].decode(), f[b"wake"] == b"1") for _, f in entries
        ]
        assert wakes == [
            (EventType.QUEUED, b1, True), (EventType.LEASED, b1, False),
            (EventType.SUCCEEDED, b1, False),
            (EventType.QUEUED, a1, True), (EventType.QUEUED, a2, True),  # Alice runs nothing yet
            (EventType.LEASED, a1, False),  # now a2 waits behind her running limit...
            (EventType.SUCCEEDED, a1, True),  # ...until a1 ends
            (EventType.LEASED, a2, False),
        ]
        for c in (alice, bob, w1, w2):
            await c.aclose()



async def test_estimated_positions_are_the_claim_order(make_queue: MakeQueue) -> None:
    """With one level and nobody at their running limit, the position estimate is exact:
    in fair mode the positions of the queued jobs are the order in which they are claimed
    (ties between never-served users go by name), and a submit answers with the position
    that a read of the job gives right after it."""
    async with make_queue(max_queued_per_user=100, max_running_per_user=100) as queue:
        await _set_mode(queue, Mode.FAIR)
        admin = await queue.client("admin")
        r = await admin.put("/api/admin/users/dave", json={"password": "dave-password-1"})
        assert r.status_code == 200, r.text
        worker = await WorkerClient.register(queue, "w0")

        async def submit(user: str) -> str:
            r = await admin.post("/api/jobs", json={"workflow": WORKFLOW, "user": user})
            assert r.status_code == 201, r.text
            job = r.json()
            assert job["priority"] == 0
            again = (await admin.get(f"/api/jobs/{job['id']}")).json()
            assert job["position"] == again["position"], (job, again)
            return str(job["id"])

        await submit("bob")
        await _drain(worker, 1)  # Bob has been served: the never-served go before him now
        ids = [await submit(u) for u in ("bob", "dave", "bob", "alice", "alice", "dave")]
        ids += [await submit(u) for u in ("alice", "bob", "alice")]
        positions = {i: (await admin.get(f"/api/jobs/{i}")).json()["position"] for i in ids}
        claimed = [j["id"] for j in await _drain(worker, len(ids))]
        assert sorted(positions.values()) == list(range(1, len(ids) + 1))
        assert sorted(ids, key=positions.__getitem__) == claimed
        for c in (admin, worker):
            await c.aclose()


async def test_fair_mode_counts_a_user_once_across_levels(make_queue: MakeQueue) -> None:
    """A role change mid-queue leaves a user with jobs at two levels (a token issued
    before the change still carries the old role). Serving them at one level must move
    them back in line at the other too, or they would be served twice in a row."""
    async with make_queue(max_queued_per_user=100, max_running_per_user=100) as queue:
        await _set_mode(queue, Mode.FAIR)
        alice, bob, admin = [await queue.client(u) for u in ("alice", "bob", "admin")]
        a_ids = await submit_many(alice, 2)  # level 0: her token says participant
        r = await admin.put(
            "/api/admin/users/alice", json={"password": "alice-password", "role": Role.INSTRUCTOR}
        )
        assert r.status_code == 200, r.text
        r = await admin.post("/api/jobs", json={"workflow": WORKFLOW, "user": "alice"})
        assert r.status_code == 201 and r.json()["priority"] == 1
        a_ids.append(r.json()["id"])
        b_ids = await submit_many(bob, 2)
        worker = await WorkerClient.register(queue, "w0")
        jobs = await _drain(worker, 5)
        assert [j["user"] for j in jobs] == ["alice", "bob", "alice", "bob", "alice"]
        # Alice's own jobs still go oldest first, whatever their level.
        assert [j["id"] for j in jobs] == [a_ids[0], b_ids[0], a_ids[1], b_ids[1], a_ids[2]]
        for c in (alice, bob, admin, worker):
            await c.aclose()
