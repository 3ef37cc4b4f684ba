"""Fan events out of the Redis stream to this replica's WebSockets and long-poll waiters.

Every state change is written to one Redis stream by the same Lua script that makes the
change, so an event exists if and only if the change happened. Each replica runs a single
blocking XREAD on that stream: it forwards entries to the WebSocket subscribers connected to
it, and wakes a worker waiting in long-poll whenever a job became ready. Replicas share
nothing but Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.contracts import EVERYONE, EventType

log = structlog.get_logger(__name__)

#: One XREAD waits at most this long; it must stay well under the client's socket timeout.
_BLOCK_MS = 2000
#: Events after which every long-polling worker looks again: a mode change; a job declined by
#: one worker (the one woken first may be the decliner, who will not take it); a cancel (the
#: worker holding the job is answered at once, with the job in its `cancel` list); the queue
#: paused or resumed (every waiter may lease again); a worker drained (it hears so at once).
_WAKE_ALL = frozenset(
    {
        EventType.MODE.encode(), EventType.DECLINED.encode(),
        EventType.CANCEL_REQUESTED.encode(), EventType.QUEUE.encode(),
        EventType.WORKER.encode(), EventType.LIMITS.encode(),
    }
)

_SESSION = EventType.SESSION.encode()
_CANCEL_REQUESTED = EventType.CANCEL_REQUESTED.encode()
#: Events that end a heartbeat's long-poll: a cancel, a worker drained or taken back.
_HEARTBEAT_NEWS = frozenset({_CANCEL_REQUESTED, EventType.WORKER.encode()})


@dataclass
class Event:
    id: str
    type: str
    job: str
    user: str
    state: str
    data: Any

    def to_json(self) -> bytes:
        return orjson.dumps(self.__dict__)


def _parse(entry_id: bytes, fields: dict[bytes, bytes]) -> Event:
    f = {k.decode(): v.decode() for k, v in fields.items()}
    return Event(
        id=entry_id.decode(),
        type=f.get("type", ""),
        job=f.get("job", ""),
        user=f.get("user", ""),
        state=f.get("state", ""),
        data=orjson.loads(f["data"]) if f.get("data") else None,
    )


@dataclass(eq=False)
class Subscriber:
    """One WebSocket's view: its own user's events, or everything for an admin (user None)."""

    user: str | None
    queue: asyncio.Queue[Event | None] = field(default_factory=lambda: asyncio.Queue(1000))
    backlog: deque[Event] = field(default_factory=deque)
    replayed_to: str | None = None

    def wants(self, event: Event) -> bool:
        """An admin gets everything; a participant their own events and those addressed to
        everyone (`user` = `*`, e.g. a workflow an admin pushed to all)."""
        if self.user is None:
            return True
        return event.user != "" and (event.user == self.user or event.user == EVERYONE)

    async def next(self) -> Event | None:
        """The next event: the replayed backlog first, then live ones not already replayed.
        None means the subscription ended (too slow to keep up, or shutdown)."""
        if self.backlog:
            return self.backlog.popleft()
        while True:
            event = await self.queue.get()
            if event is None or self.replayed_to is None or _after(event.id, self.replayed_to):
                return event


class LeaseWaiters:
    """Workers parked in long-poll, woken one per ready job, oldest first; idle workers before
    prefetching ones (a busy worker asking for a job to queue behind its running one), so a
    job goes to a free GPU when one waits on this replica."""

    def __init__(self) -> None:
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._prefetching: deque[asyncio.Future[None]] = deque()

    def add(self, prefetch: bool = False) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        (self._prefetching if prefetch else self._waiting).append(fut)
        return fut

    def discard(self, fut: asyncio.Future[None]) -> None:
        for line in (self._waiting, self._prefetching):
            with contextlib.suppress(ValueError):
                line.remove(fut)
        if fut.done() and not fut.cancelled():
            # It was woken but did not use the wake-up: pass it on.
            self.wake(1)

    def wake(self, count: int = 1) -> None:
        for line in (self._waiting, self._prefetching):
            while count > 0 and line:
                fut = line.popleft()
                if not fut.done():
                    fut.set_result(None)
                    count -= 1

    def wake_all(self) -> None:
        self.wake(len(self._waiting) + len(self._prefetching))


class EventHub:
    """The replica's single reader of the event stream."""

    def __init__(
        self, redis: Redis, stream_key: str,
        on_session: Callable[[str | None], None] | None = None,
    ) -> None:
        self.redis = redis
        self.stream_key = stream_key
        #: Called with a user id on their session event, with None when events may have
        #: been missed (the stream could not be read): cached session state must go.
        self.on_session = on_session
        self.waiters = LeaseWaiters()
        #: Heartbeats waiting to hear of a cancel (see `cancel_requested`).
        self._cancel_watchers: set[asyncio.Future[None]] = set()
        self._subscribers: set[Subscriber] = set()
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._stopping = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event-hub")
        await self._ready.wait()

    async def stop(self) -> None:
        # The flag ends the loop even if the cancellation is swallowed inside the Redis
        # client (then within one XREAD block, 2 s).
        self._stopping = True
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for sub in list(self._subscribers):
            sub.queue.put_nowait(None)

    async def _run(self) -> None:
        last_id = "$"
        while not self._stopping:
            try:
                if last_id == "$":
                    # Pin the start to a concrete id so no entry slips by between reads.
                    info = await self.redis.xinfo_stream(self.stream_key)
                    last_id = info["last-generated-id"].decode()
                self._ready.set()
                batches = await self.redis.xread(
                    {self.stream_key: last_id}, block=_BLOCK_MS, count=500
                )
            except asyncio.CancelledError:
                raise
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.warning("event stream read failed; retrying", error=str(exc))
                if self.on_session is not None:
                    self.on_session(None)
                self._ready.set()
                self.waiters.wake_all()  # they re-check Redis themselves
                self._wake_cancel_watchers()
                await asyncio.sleep(0.5)
                continue
            except Exception as exc:  # no stream yet: XINFO fails until the first event
                if "no such key" not in str(exc).lower():
                    raise
                last_id = "0-0"
                continue
            for _stream, entries in batches or []:
                for entry_id, fields in entries:
                    last_id = entry_id.decode()
                    self._dispatch(entry_id, fields)

    def cancel_requested(self) -> asyncio.Future[None]:
        """A future resolved at the next cancel request (any job's: the caller re-checks
        Redis). A busy worker's heartbeat waits on it, so a cancel of a job that sends nothing
        (one queued inside ComfyUI behind the running one) reaches the worker at once."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._cancel_watchers.add(fut)
        fut.add_done_callback(self._cancel_watchers.discard)
        return fut

    def _wake_cancel_watchers(self) -> None:
        for fut in list(self._cancel_watchers):
            if not fut.done():
                fut.set_result(None)

    def _dispatch(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        if fields.get(b"type") == _SESSION:
            if self.on_session is not None:
                self.on_session(fields.get(b"user", b"").decode())
            return
        # The Lua scripts mark the events after which one more job is claimable.
        if fields.get(b"type") in _WAKE_ALL:
            self.waiters.wake_all()
            if fields.get(b"type") in _HEARTBEAT_NEWS:
                self._wake_cancel_watchers()
        elif fields.get(b"wake") == b"1":
            self.waiters.wake(1)
        if not self._subscribers:  # most entries: nobody watching here, nothing to decode
            return
        event = _parse(entry_id, fields)
        for sub in list(self._subscribers):
            if sub.wants(event):
                try:
                    sub.queue.put_nowait(event)
                except asyncio.QueueFull:
                    # A subscriber too slow to keep up is dropped; it resumes with ?since=.
                    self._subscribers.discard(sub)
                    sub.queue = asyncio.Queue(1)
                    sub.queue.put_nowait(None)

    async def _replay(self, sub: Subscriber, since: str) -> str:
        """Queue the retained entries after `since` that `sub` wants; the id replayed to.
        Read in chunks, others' entries dropped before decoding, yielding between chunks:
        memory and CPU go to the caller's own events, and submits are not stalled."""
        last = since
        while True:
            chunk = await self.redis.xrange(
                self.stream_key, min=f"({last}", max="+", count=_REPLAY_CHUNK
            )
            for entry_id, fields in chunk:
                if _wanted_raw(sub, fields):
                    sub.backlog.append(_parse(entry_id, fields))
            if chunk:
                last = chunk[-1][0].decode()
            if len(chunk) < _REPLAY_CHUNK:
                return last
            await asyncio.sleep(0)  # let other requests run between chunks

    @contextlib.asynccontextmanager
    async def subscribe(self, user: str | None, since: str | None) -> AsyncIterator[Subscriber]:
        """Subscribe; with `since`, first replay the stream's retained entries after it."""
        sub = Subscriber(user)
        self._subscribers.add(sub)  # live events queue up from here on
        try:
            if since:
                sub.replayed_to = await self._replay(sub, since)
            yield sub
        finally:
            self._subscribers.discard(sub)


_REPLAY_CHUNK = 1000


def _wanted_raw(sub: Subscriber, fields: dict[bytes, bytes]) -> bool:
    """`Subscriber.wants` on the raw entry: other users' events are skipped undecoded."""
    if fields.get(b"type") == _SESSION:
        return False
    if sub.user is None:
        return True
    user = fields.get(b"user", b"")
    return user != b"" and (user == sub.user.encode() or user == _EVERYONE)


_EVERYONE = EVERYONE.encode()


def _after(a: str, b: str) -> bool:
    ams, _, aseq = a.partition("-")
    bms, _, bseq = b.partition("-")
    return (int(ams), int(aseq or 0)) > (int(bms), int(bseq or 0))
