"""Live events over WebSocket: own jobs only for participants, everything for admins."""

from __future__ import annotations

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from services.contracts import EventType, JobState
from tests.queue_harness import WORKER_TOKENS, WORKFLOW, QueueHarness, WorkerClient, events


async def test_participant_receives_only_own_events_admin_receives_all(
    queue: QueueHarness,
) -> None:
    alice, bob = await queue.client("alice"), await queue.client("bob")
    async with events(queue, "bob") as bob_stream, events(queue, "admin") as admin_stream:
        a_job = (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json()
        b_job = (await bob.post("/api/jobs", json={"workflow": WORKFLOW})).json()
        # Bob's first event is his own: Alice's, published earlier, never reached him.
        first = await bob_stream.until(lambda e: True)
        assert first["job"] == b_job["id"] and first["user"] == "bob"
        assert first["type"] == EventType.QUEUED and first["state"] == JobState.QUEUED
        await admin_stream.until(lambda e: e["job"] == b_job["id"])
        assert [e["job"] for e in admin_stream.seen] == [a_job["id"], b_job["id"]]
    await alice.aclose()
    await bob.aclose()


async def test_progress_steps_are_streamed_in_order(queue: QueueHarness) -> None:
    alice = await queue.client("alice")
    worker = await WorkerClient.register(queue, "w0")
    async with events(queue, "alice") as stream:
        job = (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json()
        lease = await worker.lease()
        await worker.call(job["id"], "start", lease["lease_id"])
        for step in range(1, 4):
            await worker.call(job["id"], "progress", lease["lease_id"], value=step, max=3,
                              node="3")
        await worker.call(job["id"], "complete", lease["lease_id"], outputs={"9": {}})
        await stream.until(lambda e: e["type"] == EventType.SUCCEEDED)
    assert [e["type"] for e in stream.seen] == [
        EventType.QUEUED, EventType.LEASED, EventType.RUNNING,
        EventType.PROGRESS, EventType.PROGRESS, EventType.PROGRESS, EventType.SUCCEEDED,
    ]
    assert [e["data"]["value"] for e in stream.seen if e["type"] == EventType.PROGRESS] == [1, 2, 3]
    assert stream.seen[-1]["data"] == {"9": {}}
    await alice.aclose()
    await worker.aclose()


async def test_resume_with_since_replays_missed_events(queue: QueueHarness) -> None:
    alice, bob = await queue.client("alice"), await queue.client("bob")
    async with events(queue, "alice") as stream:
        first = (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json()
        seen = await stream.until(lambda e: e["job"] == first["id"])
    # Disconnected: these happen while Alice is away.
    missed = (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json()
    await bob.post("/api/jobs", json={"workflow": WORKFLOW})
    await alice.post(f"/api/jobs/{missed['id']}/cancel")
    async with events(queue, "alice", since=seen["id"]) as resumed:
        await resumed.until(lambda e: e["type"] == EventType.CANCELLED)
        live = (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json()
        await resumed.until(lambda e: e["job"] == live["id"])
    assert [(e["job"], e["type"]) for e in resumed.seen] == [
        (missed["id"], EventType.QUEUED),
        (missed["id"], EventType.CANCELLED),
        (live["id"], EventType.QUEUED),
    ]
    await alice.aclose()
    await bob.aclose()


async def test_event_socket_requires_a_person(queue: QueueHarness) -> None:
    url = queue.ws_url("/api/events")
    for headers, code in [
        ({}, 4401),
        ({"Authorization": "Bearer nope"}, 4401),
        ({"Authorization": f"Bearer {WORKER_TOKENS['w0']}"}, 4403),
    ]:
        with pytest.raises(ConnectionClosed) as closed:
            async with connect(url, additional_headers=headers) as ws:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == code
    with pytest.raises(ConnectionClosed) as closed:
        async with connect(url + f"?token={await queue.token('alice')}&since=garbage") as ws:
            await ws.recv()
    assert closed.value.rcvd.code == 4400
