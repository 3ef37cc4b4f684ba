"""Refuse request bodies over the configured size before they are read into memory."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
import pydantic_core
from redis.asyncio import Redis
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

T = TypeVar("T")


class BodyTooLarge(HTTPException):
    """Raised mid-stream; an HTTPException so the framework answers 413, not 400."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body larger than {max_bytes} bytes")


NOT_JSON = "request body is not valid JSON"
MALFORMED_LENGTH = "malformed Content-Length header: expected the body's size in bytes"

#: More digits than this is more than any limit (and more than int() should be asked to parse).
_MAX_DIGITS = 18


def check_declared_length(scope: Scope, max_bytes: int) -> None:
    """Refuse, before reading anything, a malformed Content-Length (400) or one over the
    limit (413). The server may pass the value on with surrounding whitespace (httptools
    keeps trailing spaces), which HTTP allows."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            value = value.strip(b" \t")
            if not value.isdigit():
                raise HTTPException(400, MALFORMED_LENGTH)
            if len(value) > _MAX_DIGITS or int(value) > max_bytes:
                raise BodyTooLarge(max_bytes)
            return


async def read_body(scope: Scope, receive: Receive, max_bytes: int) -> bytes:
    """The whole request body, refusing (HTTPException: 400, 413) a malformed length or a
    body past `max_bytes`."""
    check_declared_length(scope, max_bytes)
    chunks: list[bytes] = []
    seen = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            raise HTTPException(400, "client disconnected")
        chunk = message.get("body", b"")
        seen += len(chunk)
        if seen > max_bytes:
            raise BodyTooLarge(max_bytes)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


#: Deeper JSON than this is refused: the stores' encoder (orjson) stops at 255 levels, and a
#: body is stored nested a few levels inside its record.
MAX_JSON_DEPTH = 200


def check_json_body(raw: bytes) -> None:
    """Refuse (400, naming the place) a JSON body the queue could parse but never store:
    integers beyond 64 bits, nesting deeper than MAX_JSON_DEPTH, lone surrogates, and
    anything that is not UTF-8 JSON (UTF-16, a BOM). Every route's body passes here, the hot
    path's too, so a client gets one answer whichever route it calls. An empty body is left
    to the route (422 'body: Field required' where one is needed)."""
    if not raw:
        return
    try:
        # Depth limit 200; refuses lone surrogates and NaN (not JSON, and stored as null).
        value = pydantic_core.from_json(raw, allow_inf_nan=False)
    except ValueError as exc:
        why = str(exc)
        if "recursion limit" in why:
            why = f"nested deeper than {MAX_JSON_DEPTH} levels"
        raise HTTPException(400, f"{NOT_JSON}: {why}") from exc
    try:
        orjson.dumps(value)
    except TypeError as exc:  # an integer beyond 64 bits (the only type from_json can make)
        where = _big_int_path(value) or "body"
        raise HTTPException(400, f"{where}: integer out of the 64-bit range") from exc


def _big_int_path(value: Any, path: str = "") -> str | None:
    """Where the first integer beyond 64 bits sits, as a dotted path (failure path only)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return path if not -(2**63) <= value < 2**64 else None
    items: Any = value.items() if isinstance(value, dict) else (
        enumerate(value) if isinstance(value, list) else ()
    )
    for key, item in items:
        found = _big_int_path(item, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


def _wants_json_check(scope: Scope) -> bool:
    """Bodies FastAPI would read as JSON: no Content-Encoding (the gzipped catalogue is
    inflated and checked by its route) and a JSON or missing Content-Type."""
    if scope["method"] not in ("POST", "PUT", "PATCH"):
        return False
    ctype = b""
    for name, value in scope["headers"]:
        if name == b"content-encoding":
            return False
        if name == b"content-type":
            ctype = value
    return not ctype or b"json" in ctype


class BodySizeLimit:
    """Pure ASGI middleware: checks Content-Length up front and counts chunked bodies."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            check_declared_length(scope, self.max_bytes)
        except HTTPException as exc:
            await _reject(send, exc)
            return
        if _wants_json_check(scope):
            await self._checked_json(scope, receive, send)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge as exc:
            if not started:
                await _reject(send, exc)


    async def _checked_json(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Read the whole (size-limited) body, check it, and hand it on in one message."""
        try:
            raw = await read_body(scope, receive, self.max_bytes)
            check_json_body(raw)
        except HTTPException as exc:
            await _reject(send, exc)
            return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()  # a disconnect, eventually
            delivered = True
            return {"type": "http.request", "body": raw, "more_body": False}

        await self.app(scope, replay, send)


async def _reject(send: Send, exc: HTTPException) -> None:
    """Answer with the one error shape, `{"detail": ...}`."""
    body = orjson.dumps({"detail": exc.detail})
    await send(
        {
            "type": "http.response.start",
            "status": exc.status_code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class HashGate:
    """At most `concurrency` password hashes at once (argon2 takes tens of MB each), and at
    most `queue` callers waiting for one; past that, 429 at once. Memory stays bounded
    however many logins arrive together."""

    def __init__(self, concurrency: int, queue: int) -> None:
        self._sem = asyncio.Semaphore(concurrency)
        self._limit = concurrency + queue
        self._inside = 0

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._inside >= self._limit:
            raise HTTPException(
                429, "too many logins at once, try again in a second",
                headers={"Retry-After": "1"},
            )
        self._inside += 1
        try:
            async with self._sem:
                return await asyncio.to_thread(fn, *args)
        finally:
            self._inside -= 1


class LoginFailures:
    """Failed logins counted in Redis (so every replica shares them) per user and per
    address over a window; past a limit, 429 with Retry-After until the window ends."""

    def __init__(
        self, redis: Redis, prefix: str, per_user: int, per_address: int, window_s: int
    ) -> None:
        self.redis = redis
        self.prefix = prefix + "loginfail:"
        self.limits = {"user": per_user, "addr": per_address}
        self.window_s = window_s

    def _keys(self, uid: str, address: str | None) -> dict[str, str]:
        keys = {"user": self.prefix + "user:" + uid[:128]}
        if address:
            keys["addr"] = self.prefix + "addr:" + address[:64]
        return keys

    async def check(self, uid: str, address: str | None) -> None:
        """Refuse (429) before any hashing when the user or the address is over its limit."""
        keys = self._keys(uid, address)
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys.values():
                pipe.get(key)
                pipe.pttl(key)
            answers = await pipe.execute()
        for i, kind in enumerate(keys):
            count, ttl_ms = answers[2 * i], answers[2 * i + 1]
            if count is not None and int(count) >= self.limits[kind]:
                retry = max(1, -(-int(ttl_ms) // 1000)) if ttl_ms and ttl_ms > 0 else 1
                who = "this user" if kind == "user" else "this address"
                raise HTTPException(
                    429, f"too many failed logins for {who}: try again in {retry} s",
                    headers={"Retry-After": str(retry)},
                )

    async def failed(self, uid: str, address: str | None) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            for key in self._keys(uid, address).values():
                pipe.incr(key)
                pipe.expire(key, self.window_s, nx=True)
            await pipe.execute()

    async def succeeded(self, uid: str) -> None:
        await self.redis.delete(self._keys(uid, None)["user"])
