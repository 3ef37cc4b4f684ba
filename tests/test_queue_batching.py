"""Script calls made in the same event-loop turn travel to Redis as one pipeline, and each
caller still gets its own result or error."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from services.queue.scripts import BatchedScript, Batcher

ECHO = "if ARGV[1] == 'boom' then return redis.error_reply('boom') end return ARGV[1]"


@pytest.fixture
async def echo(redis_url: str) -> BatchedScript:
    redis = aioredis.from_url(redis_url)
    yield BatchedScript(redis.register_script(ECHO), Batcher(redis))
    await redis.aclose()


async def _connections(redis_url: str) -> int:
    admin = aioredis.from_url(redis_url)
    count = len(await admin.client_list()) - 1  # not counting this one
    await admin.aclose()
    return count


async def test_concurrent_calls_share_one_connection(echo: BatchedScript, redis_url: str) -> None:
    before = await _connections(redis_url)
    results = await asyncio.gather(*(echo(args=[f"v{i}"]) for i in range(50)))
    assert results == [f"v{i}".encode() for i in range(50)]
    # Unbatched, 50 concurrent calls would have opened 50 connections.
    assert await _connections(redis_url) - before == 1


async def test_one_failing_call_does_not_fail_its_batch(echo: BatchedScript) -> None:
    results = await asyncio.gather(
        echo(args=["a"]), echo(args=["boom"]), echo(args=["b"]), return_exceptions=True
    )
    assert results[0] == b"a" and results[2] == b"b"
    assert isinstance(results[1], ResponseError) and "boom" in str(results[1])


async def test_a_call_that_cannot_be_sent_fails_alone(echo: BatchedScript) -> None:
    """Arguments Redis cannot take (None, a bool) are the caller's bug: that call raises
    TypeError, and the calls batched with it still run."""
    results = await asyncio.gather(
        echo(args=["a"]), echo(args=[None]), echo(args=[True]), echo(args=[7]),
        return_exceptions=True,
    )
    assert results[0] == b"a" and results[3] == b"7"
    assert isinstance(results[1], TypeError) and isinstance(results[2], TypeError)


async def test_a_batch_survives_a_flushed_script_cache(
    echo: BatchedScript, redis_url: str
) -> None:
    assert await echo(args=["warm"]) == b"warm"
    admin = aioredis.from_url(redis_url)
    await admin.script_flush()  # as after a Redis restart
    await admin.aclose()
    results = await asyncio.gather(*(echo(args=[str(i)]) for i in range(5)))
    assert results == [str(i).encode() for i in range(5)]


async def test_the_sender_being_cancelled_does_not_strand_the_others(
    echo: BatchedScript,
) -> None:
    first = asyncio.ensure_future(echo(args=["first"]))  # the turn's first call sends
    second = asyncio.ensure_future(echo(args=["second"]))  # the same turn: it joins
    await asyncio.sleep(0)  # both have queued their call; the first is yielding
    first.cancel()
    assert await asyncio.wait_for(second, 5) == b"second"
    with pytest.raises(asyncio.CancelledError):
        await first
