"""Load the Lua scripts that make every queue transition one atomic step in Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from hiredis import pack_command
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError

_NAMES = (
    "submit",
    "claim",
    "start",
    "progress",
    "heartbeat",
    "complete",
    "complete_claim",
    "fail",
    "cancel",
    "reap",
    "release",
    "position",
    "reconcile",
)


#: A script call waiting to be sent: the script, its ARGV, the caller's future.
_Pending = tuple[AsyncScript, Sequence[Any], "asyncio.Future[Any]"]


class Batcher:
    """Sends the script calls made during one event-loop turn in one write, on one connection.

    Under load many requests reach Redis in the same turn; one write for all of them, instead
    of one each, saves the syscalls and cross-process wake-ups that dominate a call's cost on
    small VMs. The first call of a turn starts a task that sends the batch on the next turn,
    when the turn's other calls have joined; every caller then waits for its own reply only.
    The send runs in its own task so that a caller being cancelled (a timeout, a shutdown)
    abandons its own reply, never the others' nor the connection they share."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._batch: list[_Pending] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def call(self, script: AsyncScript, args: Sequence[Any]) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._batch.append((script, args, fut))
        if len(self._batch) == 1:  # the first call of a turn: send the batch next turn
            task = asyncio.ensure_future(self._flush())
            self._sending.add(task)  # the loop keeps only a weak reference to tasks
            task.add_done_callback(self._sending.discard)
        return await fut

    async def _flush(self) -> None:
        batch, self._batch = self._batch, []
        await self._send(batch)

    async def _send(self, batch: list[_Pending], reloaded: bool = False) -> None:
        """Write every call at once, then give each caller its reply as soon as it is read:
        callers resume while Redis still runs the later scripts of the batch. Every caller
        gets its reply or an exception; only this task's own cancellation is raised here.

        Nothing is retried after a connection error, and a script Redis lost (NOSCRIPT after a
        restart) is loaded and sent again by this same path: a script whose reply was lost
        may have run, and running submit or complete twice is worse than a 503."""
        # hiredis packs in C (redis-py's packer is Python: several % of the service's CPU).
        # A call whose arguments cannot be packed fails alone.
        packed: list[bytes] = []
        sendable: list[_Pending] = []
        for script, args, fut in batch:
            try:
                packed.append(pack_command(("EVALSHA", script.sha, 0, *args)))
            except TypeError as exc:  # a bug in the caller: None or a bool among the arguments
                _fail([(script, args, fut)], exc)
                continue
            sendable.append((script, args, fut))
        batch = sendable
        if not batch:
            return
        pool = self.redis.connection_pool
        try:
            conn = await pool.get_connection()
        except BaseException as exc:  # Redis unreachable: every caller hears of it
            _fail(batch, exc)
            if not isinstance(exc, Exception):
                raise
            return
        reload: list[_Pending] = []
        try:
            await conn.send_packed_command(b"".join(packed))
            for script, args, fut in batch:
                try:
                    reply = await conn.read_response()
                except NoScriptError as exc:  # Redis restarted: load it, send it again below
                    if reloaded:  # lost again at once: give up rather than loop
                        _fail([(script, args, fut)], exc)
                    else:
                        reload.append((script, args, fut))
                    continue
                except ResponseError as exc:  # this call's own error (a Lua error)
                    _fail([(script, args, fut)], exc)
                    continue
                if not fut.done():
                    fut.set_result(reply)
        except BaseException as exc:
            await conn.disconnect(nowait=True)  # mid-reply: the connection's state is unknown
            _fail(batch, exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            await pool.release(conn)
        if reload:
            await self._reload(reload)

    async def _reload(self, batch: list[_Pending]) -> None:
        """Load the scripts Redis lost (SCRIPT LOAD only defines them: safe to retry), then
        send their calls again, once, through the same no-retry path."""
        try:
            for script in {id(s): s for s, _, _ in batch}.values():
                await self.redis.script_load(script.script)
        except BaseException as exc:
            _fail(batch, exc)
            if not isinstance(exc, Exception):
                raise
            return
        await self._send(batch, reloaded=True)


def _fail(batch: list[_Pending], exc: BaseException) -> None:
    """Pass `exc` to every caller still waiting (cancel them if it is a cancellation)."""
    for _, _, fut in batch:
        if fut.done():
            continue
        if isinstance(exc, Exception):
            fut.set_exception(exc)
        else:
            fut.cancel()


@dataclass(frozen=True)
class BatchedScript:
    """A registered script whose calls go through the batcher; called like AsyncScript."""

    script: AsyncScript
    batcher: Batcher

    async def __call__(self, args: Sequence[Any]) -> Any:
        return await self.batcher.call(self.script, args)


@dataclass(frozen=True)
class Scripts:
    """One registered script per transition; each is sent by SHA (EVALSHA), batched."""

    submit: BatchedScript
    claim: BatchedScript
    start: BatchedScript
    progress: BatchedScript
    heartbeat: BatchedScript
    complete: BatchedScript
    complete_claim: BatchedScript
    fail: BatchedScript
    cancel: BatchedScript
    reap: BatchedScript
    release: BatchedScript
    position: BatchedScript
    reconcile: BatchedScript


def load_scripts(redis: Redis) -> Scripts:
    """Prepend the shared helpers to each script and register it with the client."""
    folder = files("services.queue") / "lua"
    lib = (folder / "lib.lua").read_text()
    batcher = Batcher(redis)
    return Scripts(
        **{
            name: BatchedScript(
                redis.register_script(lib + "\n" + (folder / f"{name}.lua").read_text()), batcher
            )
            for name in _NAMES
        }
    )
