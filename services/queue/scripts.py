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
    small VMs. The first caller of a turn yields once, so that the turn's other calls can
    join, then sends them all; a lone call costs that one yield."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._batch: list[_Pending] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def call(self, script: AsyncScript, args: Sequence[Any]) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._batch.append((script, args, fut))
        if len(self._batch) == 1:  # the first caller of a turn sends the batch
            try:
                await asyncio.sleep(0)  # let this turn's other requests join it
            except asyncio.CancelledError:
                batch, self._batch = self._batch, []
                task = asyncio.ensure_future(self._send(batch))  # the others still get answers
                self._sending.add(task)
                task.add_done_callback(self._sending.discard)
                raise
            batch, self._batch = self._batch, []
            await self._send(batch)
        return await fut

    async def _send(self, batch: list[_Pending]) -> None:
        """Write every call at once, then give each caller its reply as soon as it is read:
        callers resume while Redis still runs the later scripts of the batch.

        Unlike a client command, nothing here is retried after a connection error: a script
        whose reply was lost may have run, and running submit or complete twice is worse than
        a 503."""
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
        except Exception as exc:  # Redis unreachable: every caller hears of it
            _fail(batch, exc)
            return
        reload: list[_Pending] = []
        try:
            await conn.send_packed_command(b"".join(packed))
            for script, args, fut in batch:
                try:
                    reply = await conn.read_response()
                except NoScriptError:  # Redis restarted: load it and run it again below
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
            raise
        finally:
            await pool.release(conn)
        for script, args, fut in reload:
            try:
                reply = await script(args=args)  # AsyncScript loads the script, then runs it
            except Exception as exc:
                _fail([(script, args, fut)], exc)
                continue
            if not fut.done():
                fut.set_result(reply)


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
