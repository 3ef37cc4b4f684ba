"""The WebSocket bridge: each participant's ComfyUI sockets, fed from the queue's event stream.

Per participant and replica there is one subscription to the queue's `/api/events` (with the
participant's own token, so the queue decides what they may see), shared by all their open
tabs, and closed a little while after the last tab goes. From it the bridge sends what
ComfyUI would have sent:

- `status` with this participant's `queue_remaining` (their queued and running jobs) on
  connect and on every change: queued, taken by a worker, finished;
- a job's ComfyUI messages, relayed by its worker, to the socket whose `clientId` submitted
  it (ComfyUI's routing, trace 09: without a client id only `progress_state`, `progress`,
  previews and `execution_interrupted` go out, to all the participant's sockets); previews
  become ComfyUI's binary frames (type 4 with metadata for a client that negotiated
  `supports_preview_metadata`, else type 1); output entries lose the worker's `key`;
- the messages ComfyUI would have sent when a job ends without its worker relaying them (a
  job failed by the queue after its attempts or by every worker declining it, a job
  cancelled while its worker was gone, a worker that relays nothing): the frontend must not
  wait for ever;
- `workshop.push_workflow` for a workflow an admin pushed (brief 5.3).

One worker's ComfyUI runs one prompt after the other, and so its messages reach the
participant: while a job of theirs is open on a worker (its messages have begun, its closing
`executing {node: null}` has not gone out), the events of their next job on that worker (a
prefetched one, whose worker relays it while the first one's outputs are still being
stored) wait, and follow once the first has closed. Jobs on different workers run at once
and are passed through as they come.

A reconnect with the same clientId takes over its running job: ComfyUI's `executing` with
the current node is sent at once, and the job's later messages go to the new socket.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import struct
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from services.comfy import shapes
from services.contracts import EVERYONE, EventType, JobState
from services.gateway.queue_client import QueueClient, QueueRefused, QueueUnavailable

log = structlog.get_logger(__name__)

#: Messages ComfyUI sends to every socket when the prompt has no client id.
BROADCAST_WITHOUT_CLIENT = {"progress_state", "progress", "preview", "execution_interrupted"}
TERMINAL = {"execution_success", "execution_error", "execution_interrupted"}
#: Events of a job that keep ComfyUI's order behind the job open before it on its worker.
_IN_ORDER = {EventType.COMFY, EventType.SUCCEEDED, EventType.FAILED, EventType.CANCELLED}
PUSH_MESSAGE = "workshop.push_workflow"
#: A subscription resumes where it left off (`?since=`) if it closed this recently.
_RESUME_S = 60.0
_SEND_TIMEOUT_S = 10.0
_RECENTLY_ENDED = 256


@dataclass
class Downstream:
    """One ComfyUI socket of the participant."""

    ws: WebSocket
    sid: str
    preview_metadata: bool = False
    #: A legacy (type-1) preview frame waiting for the `progress` message it follows.
    deferred: bytes | None = None

    async def send(self, message: dict[str, Any] | bytes) -> None:
        if isinstance(message, bytes):
            await self._send(message)
            return
        progress = message.get("type") == "progress"
        if self.deferred is not None and not progress:
            await self._flush()
        await self._send(message)
        if progress:
            await self._flush()

    async def send_legacy_preview(self, frame: bytes) -> None:
        """ComfyUI sends a client without `supports_preview_metadata` its preview after the
        step's `progress` (a metadata client gets it before): the worker hears ComfyUI's
        metadata order, so the frame waits for the next message."""
        await self._flush()
        self.deferred = frame

    async def _flush(self) -> None:
        frame, self.deferred = self.deferred, None
        if frame is not None:
            await self._send(frame)

    async def _send(self, message: dict[str, Any] | bytes) -> None:
        try:
            async with asyncio.timeout(_SEND_TIMEOUT_S):
                if isinstance(message, bytes):
                    await self.ws.send_bytes(message)
                else:
                    await self.ws.send_text(orjson.dumps(message).decode())
        except (TimeoutError, RuntimeError, WebSocketDisconnect, OSError):
            pass  # a socket going away; its reader notices and unregisters it


@dataclass
class LiveJob:
    state: str
    client_id: str | None = None
    started: bool = False
    node: str | None = None
    #: The worker relayed ComfyUI's end of the prompt (execution_success/_error/_interrupted).
    terminal: bool = False
    #: ComfyUI's closing `executing {node: null}`, held until the queue has recorded the end:
    #: a client that reads /history when it arrives must find the prompt there.
    closing: dict[str, Any] | None = None
    #: The worker that holds the job (from its `leased` event or the job record).
    worker: str | None = None
    #: Its events that wait for the job open before it on the same worker.
    held: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class SpaceHub:
    """One participant's sockets on this replica and their event subscription."""

    name: str
    token: str
    queue: QueueClient
    idle_s: float
    sockets: dict[str, Downstream] = field(default_factory=dict)
    jobs: dict[str, LiveJob] = field(default_factory=dict)
    ended: OrderedDict[str, None] = field(default_factory=OrderedDict)
    #: Per worker, the job whose messages are flowing (ComfyUI's one prompt at a time).
    open_on: dict[str, str] = field(default_factory=dict)
    last_event_id: str | None = None
    closed_at: float = 0.0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def remaining(self) -> int:
        return len(self.jobs)

    # -- the subscription ---------------------------------------------------------------------
    def start(self) -> None:
        if self.task is None or self.task.done():
            self.ready.clear()
            self.task = asyncio.create_task(self._run(), name=f"events-{self.name}")

    async def _run(self) -> None:
        backoff = 0.2
        since = self.last_event_id if time.monotonic() - self.closed_at < _RESUME_S else None
        try:
            while True:
                url = self.queue.events_url + (f"?since={since}" if since else "")
                try:
                    async with connect(
                        url,
                        additional_headers={"Authorization": f"Bearer {self.token}"},
                        max_size=16 * 1024 * 1024,
                        open_timeout=10,
                    ) as upstream:
                        await self._refresh()
                        backoff = 0.2
                        reader = asyncio.create_task(self._read(upstream))
                        idle = asyncio.create_task(self._wait_idle())
                        try:
                            done, _ = await asyncio.wait(
                                {reader, idle}, return_when=asyncio.FIRST_COMPLETED
                            )
                        finally:
                            for task in (reader, idle):
                                task.cancel()
                            for task in (reader, idle):
                                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                                    await task
                        if idle in done:
                            return
                        close_code = upstream.close_code
                    if close_code == 4401:  # the participant's session ended: sign in again
                        await self._close_sockets(4401, "session expired: reload the page")
                        return
                except (OSError, ConnectionClosed, InvalidStatus, TimeoutError,
                        QueueUnavailable, QueueRefused) as exc:  # fmt: skip
                    log.warning("event stream lost; reconnecting", user=self.name, error=str(exc))
                self.ready.set()  # do not hold new sockets back while the queue is away
                if not self.sockets:
                    return  # nobody to reconnect for; the next socket starts it again
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                since = self.last_event_id
        finally:
            self.closed_at = time.monotonic()
            self.ready.set()

    async def _wait_idle(self) -> None:
        """Returns once no socket has been open for `idle_s`."""
        while True:
            self.idle.clear()
            if self.sockets:
                await self.idle.wait()  # set whenever a socket comes or goes
                continue
            try:
                async with asyncio.timeout(self.idle_s):
                    await self.idle.wait()
            except TimeoutError:
                if not self.sockets:
                    return

    async def _read(self, upstream: Any) -> None:
        async for raw in upstream:
            event = orjson.loads(raw)
            self.last_event_id = event.get("id") or self.last_event_id
            if event.get("user") not in (self.name, EVERYONE):
                continue  # the admin's subscription carries everyone's events
            try:
                await self.handle(event)
            except (QueueUnavailable, QueueRefused) as exc:
                log.warning("could not complete a job's messages", job=event.get("job"),
                            error=str(exc))  # fmt: skip

    async def _refresh(self) -> None:
        """The participant's live jobs, read once the subscription is open (so nothing that
        happens in between is missed)."""
        params = {"state": "live", "limit": 500}
        if self.name != await self._token_owner():
            params["user"] = self.name
        listed = await self.queue.json("GET", "/api/jobs", self.token, params=params)
        old = self.jobs
        self.jobs = {
            j["id"]: LiveJob(
                j["state"], j.get("client_id"),
                started=j["state"] == JobState.RUNNING or (j["id"] in old and old[j["id"]].started),
                node=(old[j["id"]].node if j["id"] in old else None)
                or ((j.get("progress") or {}).get("node")),
                worker=j.get("worker") or (old[j["id"]].worker if j["id"] in old else None),
                held=old[j["id"]].held if j["id"] in old else [],
            )
            for j in listed
        }  # fmt: skip
        self.open_on = {w: i for w, i in self.open_on.items() if i in self.jobs}
        self.ready.set()

    _owner: str | None = None

    async def _token_owner(self) -> str:
        if self._owner is None:
            self._owner, _ = await self.queue.me(self.token)
        return self._owner

    # -- events -> ComfyUI messages -----------------------------------------------------------
    async def handle(self, event: dict[str, Any]) -> None:
        kind, job_id = event.get("type"), event.get("job") or ""
        if kind in _IN_ORDER and self._waits(job_id):
            self.jobs[job_id].held.append(event)
            return
        if kind == EventType.COMFY:
            await self._comfy(job_id, event.get("data") or {})
        elif kind == EventType.QUEUED:
            if job_id not in self.ended:
                self.jobs.setdefault(job_id, LiveJob(JobState.QUEUED))
                await self._status()
        elif kind in (EventType.LEASED, EventType.REQUEUED):
            if job_id in self.jobs:
                job = self.jobs[job_id]
                job.state = event.get("state") or kind
                data = event.get("data")
                if kind == EventType.LEASED and isinstance(data, dict) and data.get("worker"):
                    job.worker = str(data["worker"])
                elif kind == EventType.REQUEUED:  # back in the queue: its worker let it go
                    worker, job.worker = job.worker, None
                    await self._release(worker, job_id)
                await self._status()
        elif kind == EventType.RUNNING:
            if job_id in self.jobs:
                self.jobs[job_id].state = JobState.RUNNING
        elif kind in (EventType.SUCCEEDED, EventType.FAILED, EventType.CANCELLED):
            await self._ended(job_id, kind)
        elif kind == EventType.PUSH_WORKFLOW:
            workflow = (event.get("data") or {}).get("workflow")
            await self._broadcast({"type": PUSH_MESSAGE, "data": {"workflow": workflow}})

    async def _comfy(self, job_id: str, relayed: dict[str, Any]) -> None:
        type_, data, client_id = relayed.get("type"), relayed.get("data"), relayed.get("client_id")
        job = self.jobs.get(job_id)
        if job is not None:
            job.client_id = client_id
            if type_ == "execution_start":
                job.started = True
            elif type_ == "executing" and isinstance(data, dict) and data.get("node"):
                job.node = str(data["node"])
        if type_ == "executed" and isinstance(data, dict):
            from services.gateway.prompts import public_outputs

            data = {**data, "output": public_outputs(data.get("output"))}
        message: dict[str, Any] | bytes
        if type_ == "preview":
            await self._preview(job_id, job, data or {}, client_id)
            return
        message = {"type": type_, "data": data}
        if (
            job is not None
            and type_ == "executing"
            and isinstance(data, dict)
            and data.get("node") is None
        ):
            job.closing = message
            return
        await self._route(message, client_id, type_ in BROADCAST_WITHOUT_CLIENT)
        if job is not None and type_ in TERMINAL:
            job.terminal = True

    async def _preview(
        self, job_id: str, job: LiveJob | None, data: dict[str, Any], client_id: str | None
    ) -> None:
        try:
            image = base64.b64decode(data.get("image") or "")
        except ValueError:
            return
        fmt = "PNG" if str(data.get("format", "jpeg")).lower() == "png" else "JPEG"
        node = (job.node if job else None) or ""
        legacy = (
            struct.pack(">I", shapes.PREVIEW_IMAGE)
            + struct.pack(">I", shapes.PREVIEW_FORMAT_CODES[fmt])
            + image
        )
        metadata = orjson.dumps(
            shapes.preview_metadata(node, job_id, "image/png" if fmt == "PNG" else "image/jpeg")
        )
        rich = (
            struct.pack(">I", shapes.PREVIEW_IMAGE_WITH_METADATA)
            + struct.pack(">I", len(metadata))
            + metadata
            + image
        )
        for socket in self._targets(client_id, broadcast=True):
            if socket.preview_metadata:
                await socket.send(rich)
            else:
                await socket.send_legacy_preview(legacy)

    def _targets(self, client_id: str | None, broadcast: bool) -> list[Downstream]:
        if client_id is None:
            return list(self.sockets.values()) if broadcast else []
        socket = self.sockets.get(client_id)
        return [socket] if socket is not None else []

    async def _route(self, message: dict[str, Any], client_id: str | None, broadcast: bool) -> None:
        for socket in self._targets(client_id, broadcast):
            await socket.send(message)

    async def _broadcast(self, message: dict[str, Any]) -> None:
        for socket in list(self.sockets.values()):
            await socket.send(message)

    async def _status(self) -> None:
        await self._broadcast(shapes.status_message(self.remaining))

    def _waits(self, job_id: str) -> bool:
        """Whether the job's events must wait: another job is open on its worker. A job
        whose messages begin becomes its worker's open job."""
        job = self.jobs.get(job_id)
        if job is None or job.worker is None:
            return False
        if job.held:
            return True  # keep its own events in order behind those already waiting
        current = self.open_on.get(job.worker)
        if current is None or current not in self.jobs:
            self.open_on[job.worker] = job_id
            return False
        return current != job_id

    async def _release(self, worker: str | None, job_id: str) -> None:
        """The job's story on its worker is over (closed, or requeued): the next job there
        whose events waited goes on."""
        if worker is None or self.open_on.get(worker) != job_id:
            return
        del self.open_on[worker]
        waiting = next((i for i, j in self.jobs.items() if j.worker == worker and j.held), None)
        if waiting is None:
            return
        self.open_on[worker] = waiting
        held, self.jobs[waiting].held = self.jobs[waiting].held, []
        for event in held:
            await self.handle(event)

    def _forget(self, job_id: str) -> None:
        self.jobs.pop(job_id, None)
        self.ended[job_id] = None
        while len(self.ended) > _RECENTLY_ENDED:
            self.ended.popitem(last=False)

    async def _ended(self, job_id: str, kind: str) -> None:
        """The queue recorded the job's end. If its worker relayed ComfyUI's end, the count
        changes and the held `executing {node: null}` follows; else the bridge sends what
        ComfyUI would have sent."""
        if job_id in self.ended:
            return
        job = self.jobs.get(job_id)
        if job is None:
            self._forget(job_id)
            return
        if job.terminal:
            self._forget(job_id)
            await self._status()
            closing = job.closing or shapes.message("executing", shapes.executing(None, job_id))
            await self._route(closing, job.client_id, False)
            await self._release(job.worker, job_id)
            return
        from services.gateway.prompts import public_outputs, synthesized_error

        record = await self.queue.json("GET", f"/api/jobs/{job_id}", self.token)
        client_id = record.get("client_id") or job.client_id
        messages: list[dict[str, Any]] = []
        ended_at = record.get("finished_at") or int(time.time() * 1000)
        started = job.started or (kind == EventType.SUCCEEDED)
        if not job.started and kind != EventType.CANCELLED:
            start = shapes.execution_start(job_id, ended_at)
            messages.append(shapes.message("execution_start", start))
        if kind == EventType.SUCCEEDED:
            for node_id, output in (public_outputs(record.get("outputs")) or {}).items():
                executed = shapes.executed(node_id, output, job_id)
                messages.append(shapes.message("executed", executed))
            success = shapes.execution_success(job_id, ended_at)
            terminal = shapes.message("execution_success", success)
        elif kind == EventType.FAILED:
            terminal = shapes.message("execution_error", synthesized_error(record))
        elif started:
            interrupted = shapes.execution_interrupted(job_id, job.node or "", "", [], ended_at)
            terminal = shapes.message("execution_interrupted", interrupted)
        else:
            terminal = None  # deleted from the queue before it ran: ComfyUI says only status
        for message in messages:
            await self._route(message, client_id, False)
        if terminal is not None:
            await self._route(terminal, client_id, terminal["type"] in BROADCAST_WITHOUT_CLIENT)
        self._forget(job_id)
        await self._status()
        if terminal is not None:
            closing = shapes.message("executing", shapes.executing(None, job_id))
            await self._route(closing, client_id, False)
        await self._release(job.worker, job_id)

    # -- sockets ------------------------------------------------------------------------------
    async def _close_sockets(self, code: int, reason: str) -> None:
        for socket in list(self.sockets.values()):
            with contextlib.suppress(RuntimeError, OSError):
                await socket.ws.close(code=code, reason=reason)

    def running_job_of(self, sid: str) -> LiveJob | None:
        for job in self.jobs.values():
            if (
                job.client_id == sid
                and job.state in (JobState.LEASED, JobState.RUNNING)
                and job.node
            ):
                return job
        return None


class Bridge:
    """Every participant's hub on this replica."""

    def __init__(self, queue: QueueClient, idle_s: float, features: dict[str, Any]) -> None:
        self.queue = queue
        self.idle_s = idle_s
        self.features = features
        self.hubs: dict[str, SpaceHub] = {}

    def hub(self, name: str, token: str) -> SpaceHub:
        hub = self.hubs.get(name)
        if hub is None:
            hub = self.hubs[name] = SpaceHub(name, token, self.queue, self.idle_s)
        elif hub.task is None or hub.task.done():
            hub.token = token  # a fresh subscription acts with the newest session
            hub._owner = None
        return hub

    async def serve(self, ws: WebSocket, name: str, token: str) -> None:
        """One ComfyUI `/ws` connection, until it closes."""
        await ws.accept()
        sid = ws.query_params.get("clientId") or uuid.uuid4().hex
        hub = self.hub(name, token)
        socket = Downstream(ws, sid)
        hub.sockets[sid] = socket  # a reconnect with the same clientId takes over
        hub.idle.set()
        hub.start()
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await hub.ready.wait()
            await socket.send(shapes.status_message(hub.remaining, sid))
            running = hub.running_job_of(sid)
            if running is not None:
                await socket.send(shapes.message("executing", {"node": running.node}))
            first = True
            while True:
                raw = await ws.receive_text()
                if first:
                    first = False
                    try:
                        message = orjson.loads(raw)
                    except orjson.JSONDecodeError:
                        continue
                    if isinstance(message, dict) and message.get("type") == "feature_flags":
                        flags = message.get("data") or {}
                        socket.preview_metadata = bool(
                            isinstance(flags, dict) and flags.get("supports_preview_metadata")
                        )
                        await socket.send(shapes.message("feature_flags", self.features))
        except (WebSocketDisconnect, RuntimeError, KeyError):
            pass
        finally:
            if hub.sockets.get(sid) is socket:
                del hub.sockets[sid]
            hub.idle.set()

    async def stop(self) -> None:
        for hub in self.hubs.values():
            await hub._close_sockets(1001, "the gateway is restarting")
            if hub.task is not None:
                hub.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await hub.task
