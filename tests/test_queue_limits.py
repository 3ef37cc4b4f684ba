"""The request-body limit, on the hot path (api/hotpath.py) and on the ordinary routes
(the BodySizeLimit middleware): the same answer on both, the one error shape, nothing stored."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from services.contracts import QUEUE_PORT
from services.queue.app import create_app
from services.queue.limits import MALFORMED_LENGTH
from tests.queue_harness import (
    WORKER_TOKENS,
    WORKFLOW,
    MakeQueue,
    QueueHarness,
    WorkerClient,
    queue_settings,
)

LIMIT = 10_000
TOO_LARGE = f"request body larger than {LIMIT} bytes"

#: (method, path, who): a hot route and an ordinary one of each kind of caller.
ROUTES = [
    ("POST", "/api/jobs", "alice"),  # hot
    ("POST", "/api/worker/lease", "w0"),  # hot
    ("PUT", "/api/admin/users/dave", "admin"),  # ordinary
    ("POST", "/api/worker/register", "w0"),  # ordinary
]


@pytest.fixture
async def small_queue(make_queue: MakeQueue) -> AsyncIterator[QueueHarness]:
    async with make_queue(max_body_bytes=LIMIT) as queue:
        yield queue


async def _chunks(total: int) -> AsyncIterator[bytes]:
    for _ in range(total // 1000):
        yield b" " * 1000


async def _redis_keys(queue: QueueHarness) -> set[bytes]:
    return set(await queue.app.state.ctx.store.redis.keys("*"))


@pytest.mark.parametrize(("method", "path", "who"), ROUTES)
async def test_bodies_over_the_limit_are_413_declared_or_chunked(
    small_queue: QueueHarness, method: str, path: str, who: str
) -> None:
    client = await small_queue.client(who)
    before = await _redis_keys(small_queue)
    headers = {"Content-Type": "application/json"}
    declared = await client.request(method, path, content=b" " * (LIMIT + 1), headers=headers)
    chunked = await client.request(method, path, content=_chunks(2 * LIMIT), headers=headers)
    for r in (declared, chunked):
        assert r.status_code == 413, (path, r.text)
        assert r.json() == {"detail": TOO_LARGE}
    assert "content-length" not in chunked.request.headers  # it really was chunked
    assert await _redis_keys(small_queue) == before
    await client.aclose()


async def test_a_chunked_body_within_the_limit_is_served(small_queue: QueueHarness) -> None:
    alice = await small_queue.client("alice")

    async def body() -> AsyncIterator[bytes]:
        raw = orjson.dumps({"workflow": WORKFLOW})
        for i in range(0, len(raw), 50):
            yield raw[i : i + 50]

    r = await alice.post("/api/jobs", content=body(), headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    await alice.aclose()


async def _raw_request(queue: QueueHarness, head: bytes, body: bytes) -> tuple[int, bytes]:
    host, port = queue.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(head + b"Connection: close\r\n\r\n" + body)
    await writer.drain()
    async with asyncio.timeout(10):
        raw = await reader.read()
    writer.close()
    status_line, _, rest = raw.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


async def test_content_length_with_trailing_whitespace_is_a_valid_length(
    small_queue: QueueHarness,
) -> None:
    """HTTP allows whitespace around a header value; uvicorn's httptools passes a trailing
    space on to the app. It is the body's length, not a malformed or oversized one."""
    body = orjson.dumps({"workflow": WORKFLOW})
    token = await small_queue.token("alice")
    head = (
        b"POST /api/jobs HTTP/1.1\r\nHost: q\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}  \r\n".encode()
    )
    status, _ = await _raw_request(small_queue, head, body)
    assert status == 201
    worker = await WorkerClient.register(small_queue, "w0")
    body = orjson.dumps({"worker_id": "w0"})
    head = (
        b"POST /api/worker/heartbeat HTTP/1.1\r\nHost: q\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {WORKER_TOKENS['w0']}\r\n".encode()
        + f"Content-Length: {len(body)} \r\n".encode()
    )
    status, reply = await _raw_request(small_queue, head, body)
    assert status == 200, reply
    await worker.aclose()


async def _asgi(app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]]) -> Any:
    """One request straight into the ASGI app: some malformed headers never get past
    uvicorn's own parser, but another server (or proxy) may pass them on."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": b"", "headers": headers, "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", QUEUE_PORT),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start, body = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], orjson.loads(body)


@pytest.mark.parametrize("value", [b"abc", b"-1", b"1e3", b"+2", b"0x2", b"2, 2", b""])
@pytest.mark.parametrize(("method", "path", "who"), ROUTES)
async def test_a_malformed_content_length_is_400_on_every_route(
    redis_url: str, value: bytes, method: str, path: str, who: str
) -> None:
    """Refused before anything is read or authenticated, with the reason; not a 413 that
    claims the body is too large."""
    app = create_app(queue_settings(redis_url, max_body_bytes=LIMIT))
    headers = [(b"content-type", b"application/json"), (b"content-length", value)]
    assert await _asgi(app, method, path, headers) == (400, {"detail": MALFORMED_LENGTH})
    huge = [(b"content-length", b"9" * 40)]  # digits enough to overflow any integer type
    assert await _asgi(app, method, path, huge) == (413, {"detail": TOO_LARGE})
