"""One body reader for every route (issue 13, defects 5 and 9): the bad-input table gets the
same status and body from a hot route (POST /api/jobs) and an ordinary one
(PUT /api/admin/mode), never a 500, and nothing is written."""

from __future__ import annotations

import httpx
import pytest

from tests.queue_harness import QueueHarness, WorkerClient

DEEP = b'{"workflow": ' + b"[" * 300 + b"]" * 300 + b"}"
TABLE: list[tuple[str, bytes, dict[str, str]]] = [
    ("empty", b"", {}),
    ("not json", b"{nope", {}),
    ("utf-16", '{"mode": "fifo"}'.encode("utf-16"), {}),
    ("bom", b"\xef\xbb\xbf{}", {}),
    ("big int", b'{"workflow": {"1": {"inputs": {"seed": 123456789012345678901234567890}}}}', {}),
    ("deep", DEEP, {}),
    ("lone surrogate", b'{"mode": "\\ud800"}', {}),
    ("nan", b'{"x": NaN}', {}),
]


async def _both(queue: QueueHarness, raw: bytes) -> tuple[httpx.Response, httpx.Response]:
    admin = await queue.client("admin")
    headers = {"Content-Type": "application/json"}
    hot = await admin.post("/api/jobs", content=raw, headers=headers)
    plain = await admin.put("/api/admin/mode", content=raw, headers=headers)
    await admin.aclose()
    return hot, plain


@pytest.mark.parametrize(("name", "raw", "_"), TABLE, ids=[t[0] for t in TABLE])
async def test_hot_and_ordinary_routes_answer_bad_bodies_alike(
    queue: QueueHarness, name: str, raw: bytes, _: dict[str, str]
) -> None:
    redis = queue.app.state.ctx.store.redis
    before = sorted(await redis.keys("*"))
    hot, plain = await _both(queue, raw)
    assert 400 <= hot.status_code < 500, (name, hot.status_code, hot.text)
    assert (hot.status_code, hot.json()) == (plain.status_code, plain.json()), name
    assert hot.headers["content-type"] == "application/json"
    assert set(hot.json()) == {"detail"}
    assert sorted(await redis.keys("*")) == before, name


async def test_big_int_is_named_by_field(queue: QueueHarness) -> None:
    hot, _ = await _both(queue, TABLE[4][1])
    assert hot.status_code == 400
    assert hot.json()["detail"] == "workflow.1.inputs.seed: integer out of the 64-bit range"


@pytest.mark.parametrize("path", ["register", "progress", "fail"])
async def test_worker_routes_refuse_unstorable_json(queue: QueueHarness, path: str) -> None:
    worker = await WorkerClient.register(queue, "w0")
    raw = {
        "register": b'{"gpu": "\\ud800"}',
        "progress": b'{"worker_id": "w0", "lease_id": "y", "data": {"x": '
        + str(2**70).encode() + b"}}",
        "fail": b'{"worker_id": "w0", "lease_id": "y", "error": ' + b"[" * 260 + b"]" * 260
        + b"}",
    }[path]
    url = "/api/worker/register" if path == "register" else f"/api/worker/jobs/x/{path}"
    r = await worker.http.post(url, content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"detail"}
    await worker.aclose()
