"""The Python <-> Lua call convention: each script's arguments are declared once, by name, in
`services.queue.scripts.Scripts`; each script takes exactly those names, in that order, from
`args()`, and reads ARGV nowhere else; a mismatch stops the service from loading them."""

from __future__ import annotations

import re
from importlib.resources import files

import pytest
import redis.asyncio as aioredis

from services.queue.scripts import (
    Script,
    ScriptArgumentsMismatch,
    Scripts,
    argument_names,
    declared,
    lua_code,
)

LUA = files("services.queue") / "lua"


def _source(name: str) -> str:
    return (LUA / f"{name}.lua").read_text()


def test_every_script_file_is_declared_and_every_declaration_has_its_file() -> None:
    on_disk = {p.name.removesuffix(".lua") for p in LUA.iterdir() if p.name.endswith(".lua")}
    assert on_disk - {"lib"} == {d.name for d in declared()}


@pytest.mark.parametrize("decl", declared(), ids=lambda d: d.name)
def test_each_script_takes_its_declared_arguments_in_order(decl: Script) -> None:
    assert argument_names(_source(decl.name)) == decl.names


@pytest.mark.parametrize("decl", declared(), ids=lambda d: d.name)
def test_no_script_reads_argv_itself(decl: Script) -> None:
    """Only lib.lua touches ARGV (the prefix, and `args()`): a script that indexes ARGV
    would bypass the names."""
    assert "ARGV" not in lua_code(_source(decl.name))


def test_lib_reads_argv_only_for_the_prefix_and_args() -> None:
    uses = re.findall(r"[^\n]*ARGV[^\n]*", lua_code(_source("lib")))
    assert uses == [
        "local P = ARGV[1]",
        "local function args() return unpack(ARGV, 2) end",
    ]


def test_the_argument_line_is_the_first_statement_and_may_span_lines() -> None:
    source = "-- a comment\n\nlocal job_id, lease_id,\n  events_maxlen = args()\nreturn 1\n"
    assert argument_names(source) == ("job_id", "lease_id", "events_maxlen")
    assert argument_names("return 1\nlocal a = args()\n") == ()  # not first: not the line
    assert argument_names("local n = tonumber(x)\n") == ()


async def test_a_declaration_that_differs_from_its_script_refuses_to_load(
    monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    swapped = Script("lease_id", "job_id", "events_maxlen")  # start.lua: job_id, lease_id, ...
    swapped.name = "start"
    monkeypatch.setattr(Scripts, "start", swapped)
    redis = aioredis.from_url(redis_url)
    with pytest.raises(ScriptArgumentsMismatch, match=r"lua/start\.lua takes \['job_id'"):
        Scripts(redis, "cq:")
    await redis.aclose()


async def test_calls_name_every_argument_and_nothing_else(redis_url: str) -> None:
    redis = aioredis.from_url(redis_url)
    scripts = Scripts(redis, "t:")
    with pytest.raises(TypeError, match=r"missing \['events_maxlen'\], unknown \[\]"):
        await scripts.start(job_id="j", lease_id="l")
    with pytest.raises(TypeError, match=r"missing \[\], unknown \['surprise'\]"):
        await scripts.start(job_id="j", lease_id="l", events_maxlen=1000, surprise=1)
    with pytest.raises(TypeError, match=r"missing \['running_limit'\]"):
        await scripts.reconcile()  # one declared argument
    assert await redis.keys("t:*") == []  # nothing was sent
    assert await scripts.start(job_id="j", lease_id="l", events_maxlen=1000) == [b"not_found"]
    assert await scripts.reconcile(running_limit=2) == 0
    await redis.aclose()
