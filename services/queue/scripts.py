"""The Lua scripts that make every queue transition one atomic step in Redis, and how Python
calls them: each script's arguments are declared once, by name, and both sides use the names.

Adding a script (the whole convention; docs/architecture.md says the same):

1. `lua/<name>.lua`: its first statement takes its arguments, by name, from `args()` (lib.lua):
       local job_id, lease_id, events_maxlen = args()
   and nothing else in the script reads ARGV. Numbers arrive as strings (`tonumber` them);
   lists and maps are sent as JSON (`orjson.dumps` here, `cjson.decode` there).
2. `class Scripts` below: one line with the same names in the same order,
       name = Script("job_id", "lease_id", "events_maxlen")
3. Call it by keyword: `await self.scripts.name(job_id=..., lease_id=..., events_maxlen=...)`.
   A missing or unknown keyword raises TypeError before anything is sent, and `Scripts`
   refuses to load (so the service refuses to start) when a declaration and its script's
   argument line differ.

The key prefix is not an argument of any script: the bound scripts send it first, and only
lib.lua reads it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Sequence
from importlib.resources import files
from operator import itemgetter
from typing import Any, overload

from hiredis import pack_command
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError

#: A script call waiting to be sent: the script, its ARGV, the caller's future.
_Pending = tuple[AsyncScript, Sequence[Any], "asyncio.Future[Any]"]

#: A script's argument line: `local a, b, c = args()` (names may span lines).
_ARGUMENT_LINE = re.compile(r"local\s+(\w+(?:\s*,\s*\w+)*)\s*=\s*args\(\)")


class ScriptArgumentsMismatch(ValueError):
    """A script's argument line does not name its declared arguments, in order."""


def lua_code(source: str) -> str:
    """The script without its comments (Lua `--` line comments; the scripts use no others)."""
    return re.sub(r"--[^\n]*", "", source)


def argument_names(source: str) -> tuple[str, ...]:
    """The names a script's first statement takes from `args()`; () if it takes none."""
    m = _ARGUMENT_LINE.match(lua_code(source).lstrip())
    return tuple(re.split(r"\s*,\s*", m[1])) if m else ()


class Script:
    """The declaration of one script (`lua/<attribute name>.lua`): its arguments, in order."""

    def __init__(self, *names: str) -> None:
        self.names = names
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    # Scripts.__init__ shadows each declaration with its BoundScript on the instance, so this
    # only runs for the class; the overloads tell type checkers what an instance holds.
    @overload
    def __get__(self, obj: None, owner: type) -> Script: ...
    @overload
    def __get__(self, obj: Scripts, owner: type) -> BoundScript: ...
    def __get__(self, obj: Scripts | None, owner: type) -> Script | BoundScript:
        return self if obj is None else obj.__dict__[self.name]


class BoundScript:
    """A declared script, registered with the client: called with keywords, sent through the
    batcher as ``EVALSHA sha 0 <prefix> <arguments in declared order>``."""

    __slots__ = ("_get", "batcher", "names", "prefix", "script")

    def __init__(self, decl: Script, script: AsyncScript, batcher: Batcher, prefix: str) -> None:
        self.names = decl.names
        self.script = script
        self.batcher = batcher
        self.prefix = prefix
        getter = itemgetter(*decl.names) if decl.names else (lambda _: ())
        # itemgetter of one name returns the value itself, of several a tuple: make it a tuple.
        self._get = (lambda kw: (getter(kw),)) if len(decl.names) == 1 else getter

    def __call__(self, **arguments: Any) -> Awaitable[Any]:
        """The call's reply, to await; a wrong set of names raises TypeError right here."""
        try:
            values = self._get(arguments)
        except KeyError:
            values = None
        if values is None or len(arguments) != len(self.names):
            raise TypeError(self._wrong_arguments(arguments))
        return self.batcher.call(self.script, (self.prefix, *values))

    def _wrong_arguments(self, arguments: dict[str, Any]) -> str:
        missing = [n for n in self.names if n not in arguments]
        unknown = sorted(set(arguments) - set(self.names))
        return (
            f"script arguments: missing {missing}, unknown {unknown}; "
            f"it takes {list(self.names)} (services/queue/scripts.py)"
        )


class Scripts:
    """Every queue script with its arguments, in the order its argument line takes them.
    Each call goes to Redis by SHA (EVALSHA), batched (see Batcher)."""

    submit = Script(
        "job_id", "user", "level", "max_queued", "running_limit", "workflow", "meta",
        "events_maxlen", "extra_data", "default_mode", "front",
    )
    claim = Script(
        "worker_id", "lease_id", "lease_ms", "running_limit", "default_mode", "events_maxlen",
        "prefetch", "idle_ms",
    )
    start = Script("job_id", "lease_id", "events_maxlen")
    progress = Script("job_id", "lease_id", "lease_ms", "progress", "events_maxlen")
    #: leases: JSON [[job_id, lease_id], ...]
    heartbeat = Script("worker_id", "lease_ms", "leases")
    complete = Script(
        "job_id", "lease_id", "outputs", "running_limit", "retention_s", "history",
        "events_maxlen", "gpu_ms", "comfy_history",
    )
    complete_claim = Script(
        "job_id", "lease_id", "outputs", "running_limit", "retention_s", "history",
        "events_maxlen", "worker_id", "next_lease_id", "lease_ms", "default_mode", "gpu_ms",
        "comfy_history", "prefetch", "idle_ms",
    )
    fail = Script(
        "job_id", "lease_id", "error_json", "retry", "max_attempts", "running_limit",
        "retention_s", "history", "events_maxlen", "gpu_ms", "comfy_history",
    )
    cancel = Script(
        "job_id", "requester", "running_limit", "retention_s", "history", "events_maxlen"
    )
    reap = Script(
        "max_attempts", "running_limit", "retention_s", "history", "batch", "events_maxlen"
    )
    release = Script("worker_id", "running_limit", "retention_s", "history", "events_maxlen")
    #: job_ids: JSON [job_id, ...]
    position = Script("default_mode", "job_ids")
    reconcile = Script("running_limit")
    delete_job = Script("job_id", "requester")
    clear_history = Script("user")
    # The worker protocol's additions (docs/architecture.md: "Prefetch, declines, relay").
    #: messages: JSON [<JSON text of {"type", "data"}>, ...]
    relay = Script(
        "job_id", "lease_id", "lease_ms", "messages", "progress", "start", "events_maxlen"
    )
    release_job = Script(
        "job_id", "lease_id", "running_limit", "retention_s", "history", "events_maxlen"
    )
    decline = Script(
        "job_id", "lease_id", "error_json", "lost_after_ms", "running_limit", "retention_s",
        "history", "events_maxlen",
    )
    reap_declined = Script(
        "lost_after_ms", "running_limit", "retention_s", "history", "events_maxlen"
    )
    # The cockpit's (services/queue/api/cockpit.py).
    bump = Script("job_id", "running_limit", "events_maxlen")
    #: running, daily: a number or '' (none); data: JSON for the `limits` event
    set_limits = Script("uid", "running", "daily", "running_limit", "events_maxlen", "data")

    def __init__(self, redis: Redis, prefix: str) -> None:
        """Prepend the shared helpers to each script, check its argument line against its
        declaration, and register it with the client."""
        folder = files("services.queue") / "lua"
        lib = (folder / "lib.lua").read_text()
        batcher = Batcher(redis)
        for decl in declared():
            source = (folder / f"{decl.name}.lua").read_text()
            if argument_names(source) != decl.names:
                raise ScriptArgumentsMismatch(
                    f"lua/{decl.name}.lua takes {list(argument_names(source))} from args(), "
                    f"but scripts.py declares {list(decl.names)}: make them the same, in order"
                )
            script = redis.register_script(lib + "\n" + source)
            self.__dict__[decl.name] = BoundScript(decl, script, batcher, prefix)


def declared() -> list[Script]:
    """Every script declaration of `Scripts`."""
    return [v for v in vars(Scripts).values() if isinstance(v, Script)]


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
