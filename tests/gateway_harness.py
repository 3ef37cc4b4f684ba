"""The whole participant path for tests: the queue, the gateway, a ComfyUI double, and a
worker between the queue and the double.

`PlayWorker` speaks the queue's worker protocol (tests/queue_harness.py `WorkerClient`) and
drives the double as a worker would (brief 5.1): it leases a job, copies the participant's
input files to its ComfyUI, submits with `prompt_id` = the job's id, relays every ComfyUI
message of the job, stores output files under `job_file_key` and reports them rewritten as
in brief 5.0, and interrupts its ComfyUI when the job is cancelled. It stands in for
`services/worker` until that lands on main; the queue's catalogue and message relay are
reached through `QueueSideStandIn` (the worker protocol's `GET /api/catalog` and comfy
events), which uses the real endpoints when the queue has them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson
import uvicorn
from fastapi import Request, Response

from services.contracts import (
    FileType,
    Role,
    input_key,
    job_file_key,
    participant_name,
    participant_subfolder,
)
from services.gateway.app import create_app as create_gateway
from services.gateway.settings import GatewaySettings
from services.local_redis import free_port
from services.queue.auth import hash_password
from services.serving import EmbeddedServer, start_server
from services.storage import DirStore, ObjectStore
from tests.queue_harness import QueueHarness, WorkerClient, queue_settings, start_queue
from tests.traces import object_info

PASSWORDS = {participant_name(n): f"password-of-{participant_name(n)}" for n in (1, 2, 3)}
ADMIN_PASSWORD = "admin-password-for-tests"
_HASHES = {u: hash_password(p) for u, p in PASSWORDS.items()}


def stack_queue_settings(redis_url: str, **overrides: Any) -> Any:
    users = {u: {"password_hash": h, "role": Role.PARTICIPANT} for u, h in _HASHES.items()}
    return queue_settings(redis_url, users=users, **overrides)


class QueueSideStandIn:
    """The queue's half of brief 5.1 that the gateway reads (the pool catalogue and relayed
    ComfyUI messages), for as long as the queue lacks it: a catalogue route on the queue app
    and `comfy` events appended to the queue's stream exactly as the relay endpoint would."""

    def __init__(self, queue: QueueHarness) -> None:
        self.queue = queue
        self.catalog: bytes | None = None
        paths = set(queue.app.openapi()["paths"])  # (included routers hide their routes)
        self.native_catalog = "/api/catalog" in paths
        self.native_events = "/api/worker/jobs/{job_id}/events" in paths
        if not self.native_catalog:
            queue.app.add_api_route("/api/catalog", self._get_catalog, methods=["GET"])

    async def _get_catalog(self, request: Request) -> Response:
        if self.catalog is None:
            return Response(b'{"detail":"no worker has reported its nodes yet"}', 404)
        etag = '"' + hashlib.sha256(self.catalog).hexdigest() + '"'
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        return Response(self.catalog, media_type="application/json", headers={"ETag": etag})

    async def put_catalog(self, worker: WorkerClient, catalog: bytes) -> None:
        if self.native_catalog:
            digest = hashlib.sha256(catalog).hexdigest()
            r = await worker.http.put(f"/api/worker/catalog/{digest}", content=catalog)
            r.raise_for_status()
        else:
            self.catalog = catalog

    async def relay(
        self, worker: WorkerClient, lease: dict[str, Any], messages: list[dict[str, Any]]
    ) -> bool:
        """Relay messages of the leased job; returns whether the job was cancelled."""
        job = lease["job"]
        if self.native_events:
            r = await worker.call(job["id"], "events", lease["lease_id"], messages=messages)
            if r.status_code == 409:
                return True
            r.raise_for_status()
            return bool(r.json().get("cancel"))
        store = self.queue.app.state.ctx.store
        for message in messages:
            data = {
                "type": message["type"],
                "data": message["data"],
                "client_id": job.get("client_id"),
            }
            await store.redis.xadd(
                store.key("events"),
                {
                    "type": "comfy",
                    "job": job["id"],
                    "user": job["user"],
                    "state": "running",
                    "data": orjson.dumps(data),
                    "wake": "0",
                },
            )
        current = await store.redis.hget(store.key("job", job["id"]), "cancel_requested")
        return current == b"1"


@dataclass
class PlayWorker:
    """A worker in the test's event loop between the queue and a ComfyUI double."""

    queue: QueueHarness
    comfy: Any
    store: ObjectStore
    side: QueueSideStandIn
    name: str = "w0"
    relay_messages: bool = True
    jobs_done: list[str] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.client = await WorkerClient.register(self.queue, self.name)
        await self.side.put_catalog(self.client, orjson.dumps(self.comfy.catalog))
        self.http = aiohttp.ClientSession()
        self.sid = f"worker-{self.name}"
        self.ws = await self.http.ws_connect(self.comfy.ws_url + f"?clientId={self.sid}")
        await self.ws.send_json(
            {"type": "feature_flags", "data": {"supports_preview_metadata": False}}
        )
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.ws.close()
        await self.http.close()
        await self.client.aclose()

    async def _run(self) -> None:
        while True:
            lease = await self.client.lease(wait_s=5)
            if lease is None:
                continue
            try:
                await self._execute(lease)
            except Exception as exc:  # the test sees it in the job's state
                await self.client.call(
                    lease["job"]["id"],
                    "fail",
                    lease["lease_id"],
                    error={"type": "worker_error", "message": repr(exc)},
                    retry=False,
                )

    async def _stage_inputs(self, user: str, workflow: dict[str, Any]) -> None:
        for node in workflow.values():
            image = (node.get("inputs") or {}).get("image")
            if node.get("class_type", "").startswith("LoadImage") and isinstance(image, str):
                name = image.removesuffix(" [input]")
                sub, _, base = name.rpartition("/")
                data = await self.store.get(input_key(user, sub, base))
                target = self.comfy.folders.input / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)

    async def _store_outputs(self, job: dict[str, Any], output: dict[str, Any]) -> dict[str, Any]:
        rewritten: dict[str, Any] = {}
        for kind, entries in output.items():
            if not isinstance(entries, list):
                rewritten[kind] = entries
                continue
            out = []
            for e in entries:
                if not (
                    isinstance(e, dict) and "filename" in e and e.get("type") in ("output", "temp")
                ):
                    out.append(e)
                    continue
                params = {
                    "filename": e["filename"],
                    "subfolder": e.get("subfolder", ""),
                    "type": e["type"],
                }
                async with self.http.get(self.comfy.url + "/view", params=params) as r:
                    data = await r.read()
                key = job_file_key(
                    job["user"],
                    job["id"],
                    FileType(e["type"]),
                    e.get("subfolder", ""),
                    e["filename"],
                )
                await self.store.put(key, data, "image/png")
                out.append(
                    {
                        "filename": e["filename"],
                        "type": e["type"],
                        "subfolder": participant_subfolder(job["id"], e.get("subfolder", "")),
                        "key": key,
                    }
                )
            rewritten[kind] = out
        return rewritten

    async def _execute(self, lease: dict[str, Any]) -> None:
        job, lease_id = lease["job"], lease["lease_id"]
        r = await self.client.call(job["id"], "start", lease_id)
        if r.status_code != 200:
            return
        await self._stage_inputs(job["user"], lease["workflow"])
        body = {
            "prompt": lease["workflow"],
            "prompt_id": job["id"],
            "client_id": self.sid,
            "extra_data": lease.get("extra_data") or {},
        }
        async with self.http.post(self.comfy.url + "/prompt", json=body) as r:
            if r.status != 200:
                error = await r.json()
                await self.client.call(
                    job["id"], "fail", lease_id, error=error["error"], retry=False
                )
                return
        outputs: dict[str, Any] = {}
        cancelled = False
        while True:
            try:
                msg = await asyncio.wait_for(self.ws.receive(), 0.5)
            except TimeoutError:
                cancelled = cancelled or await self._cancel_requested(lease)
                if cancelled:
                    self.comfy.interrupt()
                continue
            if msg.type == aiohttp.WSMsgType.BINARY:
                frame = bytes(msg.data)
                image = frame[8:]
                relayed = [
                    {
                        "type": "preview",
                        "data": {"format": "jpeg", "image": base64.b64encode(image).decode()},
                    }
                ]
                if self.relay_messages:
                    cancelled = await self.side.relay(self.client, lease, relayed) or cancelled
                continue
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError("the double's socket closed")
            message = json.loads(msg.data)
            data = message.get("data") or {}
            if message["type"] in ("status", "feature_flags") or data.get("prompt_id") != job["id"]:
                continue
            if message["type"] == "executed":
                data = {**data, "output": await self._store_outputs(job, data.get("output") or {})}
                outputs[data["node"]] = data["output"]
                message = {"type": "executed", "data": data}
            if self.relay_messages:
                cancelled = await self.side.relay(self.client, lease, [message]) or cancelled
            if cancelled:
                self.comfy.interrupt()
            if message["type"] == "executing" and data.get("node") is None:
                break
            if message["type"] in ("execution_error", "execution_interrupted"):
                final = message
        kind = locals().get("final", {}).get("type")
        if kind is None:
            r = await self.client.call(job["id"], "complete", lease_id, outputs=outputs)
        else:
            error = {
                "type": kind,
                "message": locals()["final"]["data"].get("exception_message", kind),
            }
            r = await self.client.call(job["id"], "fail", lease_id, error=error, retry=False)
        self.jobs_done.append(job["id"])

    async def _cancel_requested(self, lease: dict[str, Any]) -> bool:
        r = await self.client.http.post(
            "/api/worker/heartbeat",
            json={
                "worker_id": self.client.worker_id,
                "leases": [{"job_id": lease["job"]["id"], "lease_id": lease["lease_id"]}],
            },
        )
        return lease["job"]["id"] in r.json().get("cancel", [])


@dataclass
class Stack:
    queue: QueueHarness
    gateway_url: str
    store: ObjectStore
    side: QueueSideStandIn
    gateway: Any

    def url(self, user: str, path: str = "/") -> str:
        return f"{self.gateway_url}/{user}{path}"

    def client(self, user: str | None, password: str | None = None) -> httpx.AsyncClient:
        auth = None
        if user is not None:
            auth = (user, password or (ADMIN_PASSWORD if user == "admin" else PASSWORDS[user]))
        return httpx.AsyncClient(base_url=self.gateway_url, auth=auth, timeout=30)

    def ws_headers(self, user: str) -> dict[str, str]:
        password = ADMIN_PASSWORD if user == "admin" else PASSWORDS[user]
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}


@contextlib.asynccontextmanager
async def start_gateway(
    queue_url: str, store: ObjectStore, models: ObjectStore | None = None, **overrides: Any
) -> AsyncIterator[tuple[str, Any]]:
    values: dict[str, Any] = {"precompress": False, "catalog_check_s": 0, **overrides}
    settings = GatewaySettings(
        queue_url=queue_url,
        storage={"dir": str(getattr(store, "root", "/nonexistent"))},
        **values,
    )
    app = create_gateway(settings, store, models)
    port = free_port()
    server = EmbeddedServer(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            timeout_graceful_shutdown=2,
            ws_max_size=16 * 1024 * 1024,
        )
    )
    task = await start_server(server)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def start_stack(
    redis_url: str,
    files: Path,
    store: ObjectStore | None = None,
    models: ObjectStore | None = None,
    **gateway: Any,
) -> AsyncIterator[Stack]:
    """Queue and gateway; `models` is the models bucket the gateway reads headers from."""
    store = store or DirStore(files)
    async with start_queue(stack_queue_settings(redis_url)) as queue:
        side = QueueSideStandIn(queue)
        async with start_gateway(queue.base_url, store, models, **gateway) as (url, app):
            yield Stack(queue, url, store, side, app)


@contextlib.asynccontextmanager
async def play_worker(stack: Stack, comfy: Any, **options: Any) -> AsyncIterator[PlayWorker]:
    worker = PlayWorker(stack.queue, comfy, stack.store, stack.side, **options)
    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop()


def default_catalog() -> dict[str, Any]:
    return json.loads(json.dumps(object_info()))
