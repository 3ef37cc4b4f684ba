"""The worker registers again when the queue forgot it (issue 13, item 2): its Redis lost the
worker's entry (restarted without its data, or flushed), so lease and heartbeat answer 403
"not registered". Without registering again the worker would stay connected and idle forever."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.contracts import JobState
from tests.queue_harness import QueueHarness
from tests.worker_harness import one_worker, submit, until

#: A model-free graph the ComfyUI double runs at once.
GRAPH = {
    "1": {"class_type": "EmptyImage",
          "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "re"}},
}  # fmt: skip


async def _forget(queue: QueueHarness, worker_id: str) -> None:
    """What a Redis restart without data does to a registration: the entry and the live-set
    member go. The replica's few-second memory of "registered" goes too (a restart outlasts it)."""
    store = queue.app.state.ctx.store
    await store.redis.delete(store.key("worker", worker_id))
    await store.redis.zrem(store.key("workers"), worker_id)
    store._registered.clear()


@pytest.mark.timeout(60)
async def test_a_forgotten_worker_registers_again_and_takes_the_next_job(
    queue: QueueHarness, tmp_path: Path
) -> None:
    alice = await queue.client("alice")
    admin = await queue.client("admin")
    async with one_worker(queue, tmp_path) as setup:
        seen, w = setup.seen, setup.worker
        worker_id = w.queue.worker_id
        first = await seen.final(await submit(alice, GRAPH))
        assert first["state"] == JobState.SUCCEEDED and first["worker"] == worker_id
        before = w.registrations

        await _forget(queue, worker_id)
        listed = (await admin.get("/api/admin/workers")).json()
        assert worker_id not in {x["id"] for x in listed}

        await until(lambda: w.registrations > before, what="the worker registered again")
        listed = (await admin.get("/api/admin/workers")).json()
        assert worker_id in {x["id"] for x in listed}
        second = await seen.final(await submit(alice, GRAPH))
    assert second["state"] == JobState.SUCCEEDED and second["worker"] == worker_id
    # Once per refusal seen, not once per caller (the lease poll and the heartbeat both see it).
    assert w.registrations == before + 1
    await alice.aclose()
    await admin.aclose()
