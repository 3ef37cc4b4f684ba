"""Replay a recorded ComfyUI trace against a server speaking ComfyUI's API, and compare.

Used by `test_comfyui_double.py` against the double; the gateway's contract tests can replay
the same traces against `/userNNN/` (pass `base_url` with the prefix and their own hooks).

`replay()` walks the trace's events in order: it opens and feeds the WebSockets the trace
opened, and before each HTTP request (and at the end) waits until every socket has received
as many messages as the trace's client had seen by then: the request goes out at the same
point of the server's story, however fast the server is. Prompt ids the server chose are
mapped back to the trace's (`ids`), so paths and bodies that name them are rewritten.

`normalize()` then turns recorded and replayed bodies and messages into comparable forms:
the values that legitimately differ between two runs of ComfyUI (timestamps, prompt numbers,
anonymous socket ids, file counters, random temp prefixes, tracebacks, tensor dumps, the
order of lists ComfyUI builds from sets) become placeholders; everything else must be equal,
key for key and type for type (1 and 1.0 and True differ). Replayed values are mapped back
to the trace's prompt ids first (`Replayed.back`).
"""

from __future__ import annotations

import asyncio
import json
import re
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

HEX_ID = re.compile(r"^[0-9a-f]{32}$")
COUNTER = re.compile(r"_\d{5}_\.")
TEMP_PREFIX = re.compile(r"_temp_[a-z]{5}_")
#: Keys whose list value comes from a Python set in ComfyUI (its order is random per process).
SET_ORDERED = {"executed", "current_outputs"}


@dataclass
class Socket:
    label: str
    ws: aiohttp.ClientWebSocketResponse
    messages: list[Any] = field(default_factory=list)  # dicts (text frames) or bytes (binary)
    closed: bool = False
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    value: Any = json.loads(msg.data)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    value = bytes(msg.data)
                else:
                    continue
                async with self._changed:
                    self.messages.append(value)
                    self._changed.notify_all()
        finally:
            async with self._changed:
                self.closed = True
                self._changed.notify_all()

    async def wait_for(self, count: int, timeout_s: float, counted: Counted | None = None) -> None:
        def have() -> int:
            if counted is None:
                return len(self.messages)
            return sum(1 for m in self.messages if counted(m))

        try:
            async with asyncio.timeout(timeout_s), self._changed:
                await self._changed.wait_for(lambda: have() >= count or self.closed)
        except TimeoutError:
            pass
        if have() < count:
            raise AssertionError(
                f"socket {self.label!r} received {len(self.messages)} messages, the trace's client "
                f"had {count} by then; last: {[_short(m) for m in self.messages[-3:]]}"
            )


#: Which messages count when syncing with the trace (all when None): a server that sends a
#: different number of some message type (the gateway's `status` frames) excludes that type.
Counted = Callable[[Any], bool]


def _short(message: Any) -> str:
    return f"<binary {len(message)}>" if isinstance(message, bytes) else json.dumps(message)[:120]


@dataclass
class Exchange:
    event: dict[str, Any]
    status: int
    headers: dict[str, str]
    body: Any  # parsed JSON, text, or bytes


@dataclass
class Replayed:
    http: list[Exchange]
    sockets: dict[str, Socket]
    ids: dict[str, str]  # trace prompt id or output file name -> the replayed one

    def back(self) -> dict[str, str]:
        return {ours: theirs for theirs, ours in self.ids.items()}


#: `request_for(event) -> kwargs for session.request` when the trace only describes the body.
RequestFor = Callable[[dict[str, Any]], dict[str, Any] | None]
#: Called before each event (to change the server's timing, add models, ...).
BeforeEvent = Callable[[dict[str, Any]], Awaitable[None]]


def rewrite(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return ids.get(value, value)
    if isinstance(value, list):
        return [rewrite(v, ids) for v in value]
    if isinstance(value, dict):
        return {ids.get(k, k): rewrite(v, ids) for k, v in value.items()}
    return value


def learn_names(recorded: Any, replayed: Any, ids: dict[str, str]) -> None:
    """Map the trace's output file names to the replayed ones (counters and temp prefixes
    differ), walking both values in parallel, so later `/view` requests name the right file."""
    if isinstance(recorded, dict) and isinstance(replayed, dict):
        name, ours = recorded.get("filename"), replayed.get("filename")
        if isinstance(name, str) and isinstance(ours, str) and name != ours:
            ids.setdefault(name, ours)
        for key, value in recorded.items():
            if key in replayed:
                learn_names(value, replayed[key], ids)
    elif isinstance(recorded, list) and isinstance(replayed, list):
        for a, b in zip(recorded, replayed, strict=False):
            learn_names(a, b, ids)


def rewrite_path(path: str, ids: dict[str, str]) -> str:
    for theirs, ours in ids.items():
        path = path.replace(theirs, ours)
    return path


async def replay(
    trace: dict[str, Any],
    base_url: str,
    session: aiohttp.ClientSession,
    *,
    request_for: RequestFor | None = None,
    before_event: BeforeEvent | None = None,
    ids: dict[str, str] | None = None,
    timeout_s: float = 20.0,
    counted: Counted | None = None,
) -> Replayed:
    """Replay `trace`; pass the `ids` of an earlier replay on the same server to go on from it."""
    ws_base = base_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    sockets: dict[str, Socket] = {}
    readers: list[asyncio.Task] = []
    seen: dict[str, int] = {}  # messages the trace's client had received per socket so far
    exchanges: list[Exchange] = []
    ids = {} if ids is None else ids

    recorded: dict[str, list[Any]] = {}  # the trace's messages per socket

    async def sync() -> None:
        for label, count in seen.items():
            await sockets[label].wait_for(count, timeout_s, counted)
            ours_all = sockets[label].messages
            if counted is not None:
                ours_all = [m for m in ours_all if counted(m)]
            for theirs, ours in zip(recorded[label], ours_all, strict=False):
                learn_names(theirs, ours, ids)

    try:
        for event in trace["events"]:
            if before_event is not None:
                await before_event(event)
            kind = event["kind"]
            if kind == "ws_open":
                ws = await session.ws_connect(ws_base + event["path"], autoping=True)
                sockets[event["ws"]] = Socket(event["ws"], ws)
                seen[event["ws"]] = 0
                recorded[event["ws"]] = []
                readers.append(asyncio.create_task(sockets[event["ws"]].read()))
            elif kind == "ws_recv":
                if counted is None or counted(event.get("json", b"")):
                    seen[event["ws"]] += 1
                    recorded[event["ws"]].append(event.get("json"))
            elif kind == "ws_send":
                await sync()
                await sockets[event["ws"]].ws.send_json(event["json"])
            elif kind == "ws_close":
                await sync()
                await sockets[event["ws"]].ws.close()
            elif kind == "http":
                await sync()
                exchange = await _request(session, base_url, event, ids, request_for)
                learn_names(event["response"].get("json"), exchange.body, ids)
                exchanges.append(exchange)
        await sync()
    finally:
        for socket in sockets.values():
            await socket.ws.close()
        await asyncio.gather(*readers, return_exceptions=True)
    return Replayed(exchanges, sockets, ids)


async def _request(
    session: aiohttp.ClientSession,
    base_url: str,
    event: dict,
    ids: dict[str, str],
    request_for: RequestFor | None,
) -> Exchange:
    request = event["request"]
    kwargs = request_for(event) if request_for is not None else None
    if kwargs is None:
        kwargs = {}
        if "json" in request:
            kwargs["json"] = rewrite(request["json"], ids)
        elif "raw_body" in request:
            kwargs["data"] = request["raw_body"].encode()
            kwargs["headers"] = request.get("headers", {})
        elif "body_desc" in request:
            raise AssertionError(
                f"event {event['seq']}: the trace only describes its body "
                f"({request['body_desc']!r}); request_for must build it"
            )
    async with session.request(
        request["method"], base_url + rewrite_path(request["path"], ids), **kwargs
    ) as response:
        raw = await response.read()
        content_type = response.headers.get("Content-Type", "")
        body: Any = raw
        if content_type.startswith("application/json"):
            body = json.loads(raw)
        elif content_type.startswith("text/"):
            body = raw.decode()
        exchange = Exchange(event, response.status, dict(response.headers), body)
    recorded = event["response"].get("json")
    if (
        request["method"] == "POST"
        and request["path"].endswith("/prompt")
        and isinstance(recorded, dict)
        and isinstance(body, dict)
        and "prompt_id" in recorded
        and "prompt_id" in body
    ):
        ids[recorded["prompt_id"]] = body["prompt_id"]
    return exchange


# -- comparison -------------------------------------------------------------------------------


def normalize(value: Any, key: str | None = None) -> Any:
    """The comparable form of a recorded or replayed JSON value (see the module docstring)."""
    if key == "timestamp" and isinstance(value, (int, float)):
        return "<timestamp>"
    if key == "traceback" and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "<traceback>"
    if key == "sid" and isinstance(value, str) and HEX_ID.match(value):
        return "<anonymous sid>"
    if key in SET_ORDERED and isinstance(value, list):
        return sorted((normalize(v) for v in value), key=json.dumps)
    if key == "number" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return "<number>" if value >= 0 else "<front number>"
    if isinstance(value, bool):
        return f"bool:{value}"
    if isinstance(value, float):
        return f"float:{value}"
    if isinstance(value, str):
        if "tensor(" in value or "tensor of shape" in value:
            return "<tensor>"
        return TEMP_PREFIX.sub("_temp_<random>_", COUNTER.sub("_<counter>_.", value))
    if isinstance(value, dict):
        return {k: normalize(v, k) for k, v in value.items()}
    if isinstance(value, list):
        if _is_queue_entry(value):
            number, prompt_id, prompt, extra_data, outputs = value
            return [
                "<number>" if number >= 0 else "<front number>",
                normalize(prompt_id),
                normalize(prompt),
                normalize(extra_data),
                sorted(outputs),
            ]
        return [normalize(v) for v in value]
    return value


def _is_queue_entry(value: list) -> bool:
    return (
        len(value) == 5
        and isinstance(value[0], (int, float))
        and isinstance(value[1], str)
        and isinstance(value[2], dict)
        and isinstance(value[3], dict)
        and isinstance(value[4], list)
    )


def shape(value: Any) -> Any:
    """Only the structure: keys and value types (for machine-specific bodies)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def binary_frame(frame: bytes) -> dict[str, Any]:
    """A binary WebSocket frame's header, as the traces describe it."""
    (event_type,) = struct.unpack(">I", frame[:4])
    described: dict[str, Any] = {"event_type": event_type}
    if event_type == 1:
        (described["image_format_code"],) = struct.unpack(">I", frame[4:8])
        described["magic"] = (
            "JPEG" if frame[8:10] == b"\xff\xd8" else "PNG" if frame[8:12] == b"\x89PNG" else "?"
        )
    elif event_type == 4:
        (length,) = struct.unpack(">I", frame[4:8])
        described["metadata"] = json.loads(frame[8 : 8 + length])
        image = frame[8 + length :]
        described["magic"] = (
            "JPEG" if image[:2] == b"\xff\xd8" else "PNG" if image[:4] == b"\x89PNG" else "?"
        )
    return described


def recorded_frame(event: dict[str, Any]) -> dict[str, Any]:
    binary = event["binary"]
    described: dict[str, Any] = {"event_type": binary["event_type"]}
    if binary["event_type"] == 1:
        described["image_format_code"] = binary["image_format_code"]
    elif binary["event_type"] == 4:
        described["metadata"] = binary["metadata"]
    described["magic"] = binary["image"]["magic"]
    return described
