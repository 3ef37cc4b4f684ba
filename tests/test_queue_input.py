"""Bad input gets a clear 4xx and leaves nothing half-written."""

from __future__ import annotations

import httpx
import pytest

from tests.queue_harness import WORKFLOW, MakeQueue, QueueHarness


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "request body is not valid JSON"),
        (b'"a string"', 422, "body"),
        (b"{}", 422, "workflow: Field required"),
        (b'{"workflow": [1, 2]}', 422, "workflow: Input should be an object"),
        (b'{"workflow": {}}', 400, "workflow has no nodes"),
        (b'{"workflow": {"1": 5}}', 400, "node '1' must be an object"),
        (b'{"workflow": {"1": {"inputs": {}}}}', 400, "node '1' has no class_type"),
        (b'{"workflow": {"1": {"class_type": "X", "inputs": []}}}', 400, "inputs must be"),
        (b'{"workflow": {"1": {"class_type": "X", "inputs": {"a": ["9", 0]}}}}', 400,
         "links to node '9', which is not in the workflow"),
        (b'{"workflow": {"nodes": [], "links": []}}', 400, "UI-format workflow"),
        (b'{"workflow": {"1": {"class_type": "X"}}, "surprise": 1}', 422,
         "surprise: Extra inputs are not permitted"),
    ],
)
async def test_malformed_submissions(
    queue: QueueHarness, body: bytes, status: int, message: str
) -> None:
    alice = await queue.client("alice")
    r = await alice.post("/api/jobs", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]
    assert (await alice.get("/api/jobs")).json() == []
    await alice.aclose()


async def test_body_over_the_limit_is_413(make_queue: MakeQueue) -> None:
    async with make_queue(max_body_bytes=10_000) as queue:
        alice = await queue.client("alice")
        big = {"1": {"class_type": "Note", "inputs": {"text": "x" * 20_000}}}
        r = await alice.post("/api/jobs", json={"workflow": big})
        assert r.status_code == 413 and "larger than 10000 bytes" in r.json()["detail"]

        async def chunks():
            for _ in range(20):
                yield b" " * 1000

        r = await alice.post("/api/jobs", content=chunks(),
                             headers={"Content-Type": "application/json"})
        assert r.status_code == 413
        assert (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).status_code == 201
        assert len((await alice.get("/api/jobs")).json()) == 1
        await alice.aclose()


async def test_worker_input_errors(queue: QueueHarness) -> None:
    worker = await queue.client("w0")
    r = await worker.post("/api/worker/lease", json={"worker_id": "w0", "wait_s": -1})
    assert r.status_code == 422 and "wait_s" in r.json()["detail"]
    r = await worker.post("/api/worker/register", json={"instance": "../etc"})
    assert r.status_code == 422 and "instance" in r.json()["detail"]
    r = await worker.post("/api/worker/jobs/nope/complete",
                          json={"worker_id": "w0", "lease_id": "x", "outputs": {}})
    assert r.status_code == 409 and "lease lost" in r.json()["detail"]
    r = await worker.post("/api/worker/jobs/nope/fail", json={"worker_id": "w0", "lease_id": "x"})
    assert r.status_code == 422 and "error: Field required" in r.json()["detail"]
    await worker.aclose()


async def test_unknown_route_and_method(queue: QueueHarness) -> None:
    async with httpx.AsyncClient(base_url=queue.base_url) as http:
        assert (await http.get("/api/nowhere")).status_code == 404
        assert (await http.delete("/api/health")).status_code == 405
