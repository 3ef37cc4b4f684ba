"""Run the queue service on a real socket inside the test's event loop, and talk to it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import redis.asyncio as aioredis
import uvicorn
from redis.backoff import NoBackoff
from redis.retry import Retry

from services.contracts import WORKER_TOKEN_PREFIX, Role
from services.local_redis import free_port
from services.queue.app import create_app
from services.queue.auth import hash_password
from services.queue.scripts import Scripts
from services.queue.settings import QueueSettings
from services.serving import EmbeddedServer, start_server

ADMIN_PASSWORD = "admin-password-for-tests"
PASSWORDS = {"alice": "alice-password", "bob": "bob-password", "carol": "carol-password"}
WORKER_TOKENS = {f"w{i}": f"{WORKER_TOKEN_PREFIX}test-token-{i}" for i in range(8)}

# Hash once per session: argon2 is slow on purpose.
_HASHES = {uid: hash_password(pw) for uid, pw in PASSWORDS.items()}


def queue_settings(redis_url: str, **overrides: Any) -> QueueSettings:
    users = {uid: {"password_hash": h, "role": Role.PARTICIPANT} for uid, h in _HASHES.items()}
    users["carol"]["role"] = Role.INSTRUCTOR
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "token_secret": "test-secret-test-secret-test-secret",
        "admin_password": ADMIN_PASSWORD,
        "users": users,
        "worker_tokens": WORKER_TOKENS,
        "lease_ttl_s": 30.0,
        "reap_interval_s": 0.05,
    }
    values.update(overrides)
    return QueueSettings(**values)


@dataclass
class QueueHarness:
    """A running service, with clients that log in as the people and workers of the tests."""

    base_url: str
    settings: QueueSettings
    app: Any
    _tokens: dict[str, str] = field(default_factory=dict)

    async def token(self, user: str) -> str:
        if user not in self._tokens:
            password = ADMIN_PASSWORD if user == "admin" else PASSWORDS[user]
            async with httpx.AsyncClient(base_url=self.base_url) as client:
                r = await client.post(
                    "/api/auth/token", json={"username": user, "password": password}
                )
                r.raise_for_status()
                self._tokens[user] = r.json()["access_token"]
        return self._tokens[user]

    async def client(self, user: str | None) -> httpx.AsyncClient:
        """A client authenticated as `user` (a person or a worker name), or anonymous."""
        headers = {}
        if user in WORKER_TOKENS:
            headers["Authorization"] = f"Bearer {WORKER_TOKENS[user]}"
        elif user is not None:
            headers["Authorization"] = f"Bearer {await self.token(user)}"
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=60)

    def ws_url(self, path: str) -> str:
        return "ws" + self.base_url.removeprefix("http") + path


@contextlib.asynccontextmanager
async def start_queue(settings: QueueSettings) -> AsyncIterator[QueueHarness]:
    app = create_app(settings)
    port = free_port()
    server = EmbeddedServer(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=5
        )
    )
    task = await start_server(server)
    try:
        yield QueueHarness(f"http://127.0.0.1:{port}", settings, app)
    finally:
        server.should_exit = True
        await task


WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}},
}


async def submit_many(client: httpx.AsyncClient, n: int, **extra: Any) -> list[str]:
    """Submit `n` jobs of WORKFLOW (with `extra` fields) one after another; their ids."""
    ids = []
    for _ in range(n):
        r = await client.post("/api/jobs", json={"workflow": WORKFLOW, **extra})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    return ids


@dataclass
class WorkerClient:
    """The worker side of the protocol, as a GPU host would speak it."""

    http: httpx.AsyncClient
    worker_id: str

    @classmethod
    async def register(cls, queue: QueueHarness, name: str, instance: str | None = None):
        http = await queue.client(name)
        r = await http.post("/api/worker/register", json={"instance": instance, "gpu": "test"})
        r.raise_for_status()
        return cls(http, r.json()["worker_id"])

    async def lease(
        self, wait_s: float = 0, complete: dict[str, Any] | None = None, prefetch: bool = False
    ) -> dict[str, Any] | None:
        """Lease the next job; `complete` ({job_id, lease_id, outputs}) reports one first;
        `prefetch`: as a busy worker (refused while another worker waits idle)."""
        r = await self.lease_response(wait_s, complete, prefetch)
        r.raise_for_status()
        return r.json().get("lease")

    async def lease_response(
        self, wait_s: float = 0, complete: dict[str, Any] | None = None, prefetch: bool = False
    ) -> httpx.Response:
        body = {
            "worker_id": self.worker_id, "wait_s": wait_s, "complete": complete,
            "prefetch": prefetch,
        }
        return await self.http.post("/api/worker/lease", json=body)

    async def call(self, job_id: str, action: str, lease_id: str, **body: Any) -> httpx.Response:
        return await self.http.post(
            f"/api/worker/jobs/{job_id}/{action}",
            json={"worker_id": self.worker_id, "lease_id": lease_id, **body},
        )

    async def aclose(self) -> None:
        await self.http.aclose()


@dataclass
class EventStream:
    """A WebSocket on /api/events, read until a predicate matches."""

    ws: Any
    seen: list[dict[str, Any]] = field(default_factory=list)

    async def until(self, predicate: Any, timeout_s: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout_s):
            while True:
                event = orjson.loads(await self.ws.recv())
                self.seen.append(event)
                if predicate(event):
                    return event


@contextlib.asynccontextmanager
async def events(queue: QueueHarness, user: str, since: str | None = None):
    from websockets.asyncio.client import connect

    url = queue.ws_url("/api/events") + (f"?since={since}" if since else "")
    headers = {"Authorization": f"Bearer {await queue.token(user)}"}
    async with connect(url, additional_headers=headers) as ws:
        yield EventStream(ws)


#: The `make_queue` fixture: ``async with make_queue(**settings_overrides) as queue``.
MakeQueue = Callable[..., AbstractAsyncContextManager[QueueHarness]]


async def cut_off_redis(queue: QueueHarness) -> None:
    """Point the running service's store at a port nobody listens on. No retries: redis-py's
    default backoff would stretch each failure over seconds."""
    store = queue.app.state.ctx.store
    await store.redis.aclose()
    store.redis = aioredis.Redis(port=1, retry=Retry(NoBackoff(), 0))
    store.scripts = Scripts(store.redis, store.prefix)
