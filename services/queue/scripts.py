"""Load the Lua scripts that make every queue transition one atomic step in Redis."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

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
)


@dataclass(frozen=True)
class Scripts:
    """One registered script per transition; each is sent by SHA (EVALSHA) after first use."""

    submit: AsyncScript
    claim: AsyncScript
    start: AsyncScript
    progress: AsyncScript
    heartbeat: AsyncScript
    complete: AsyncScript
    complete_claim: AsyncScript
    fail: AsyncScript
    cancel: AsyncScript
    reap: AsyncScript
    release: AsyncScript
    position: AsyncScript


def load_scripts(redis: Redis) -> Scripts:
    """Prepend the shared helpers to each script and register it with the client."""
    folder = files("services.queue") / "lua"
    lib = (folder / "lib.lua").read_text()
    return Scripts(
        **{
            name: redis.register_script(lib + "\n" + (folder / f"{name}.lua").read_text())
            for name in _NAMES
        }
    )
