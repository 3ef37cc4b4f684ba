"""Script calls made in the same event-loop turn travel to Redis as one pipeline, and each
caller still gets its own result or error: never a second run of its script, never another
caller's cancellation, never an exception nobody retrieves."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from services.queue.scripts import Batcher
from tests.redis_proxy import RedisProxy

ECHO = "if ARGV[1] == 'boom' then return redis.error_reply('boom') end return ARGV[1]"
#: Counts its runs: how a test sees whether a script ran once or twice.
COUNT = "return redis.call('INCR', 'runs')"

Call = Callable[..., Awaitable[Any]]


def _caller(redis: aioredis.Redis, source: str) -> Call:
    script, batcher = redis.register_script(source), Batcher(redis)
    return lambda *args: batcher.call(script, args)


@pytest.fixture
async def echo(redis_url: str) -> AsyncIterator[Call]:
    redis = aioredis.from_url(redis_url)
    yield _caller(redis, ECHO)
    await redis.aclose()


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[RedisProxy]:
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    async with RedisProxy(port).running() as running:
        yield running


@pytest.fixture
async def unhandled() -> AsyncIterator[list[dict[str, Any]]]:
    """What reaches the loop's exception handler during the test ("Future exception was never
    retrieved" and the like), collected after a garbage collection."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: seen.append(context))
    try:
        yield seen
    finally:
        loop.set_exception_handler(previous)


async def _runs(redis_url: str) -> int:
    admin = aioredis.from_url(redis_url)
    try:
        return int(await admin.get("runs") or 0)
    finally:
        await admin.aclose()


async def _connections(redis_url: str) -> int:
    admin = aioredis.from_url(redis_url)
    count = len(await admin.client_list()) - 1  # not counting this one
    await admin.aclose()
    return count


async def test_concurrent_calls_share_one_connection(echo: Call, redis_url: str) -> None:
    before = await _connections(redis_url)
    results = await asyncio.gather(*(echo(f"v{i}") for i in range(50)))
    assert results == [f"v{i}".encode() for i in range(50)]
    # Unbatched, 50 concurrent calls would have opened 50 connections.
    assert await _connections(redis_url) - before == 1


async def test_one_failing_call_does_not_fail_its_batch(echo: Call) -> None:
    results = await asyncio.gather(echo("a"), echo("boom"), echo("b"), return_exceptions=True)
    assert results[0] == b"a" and results[2] == b"b"
    assert isinstance(results[1], ResponseError) and "boom" in str(results[1])


async def test_a_call_that_cannot_be_sent_fails_alone(echo: Call) -> None:
    """Arguments Redis cannot take (None, a bool) are the caller's bug: that call raises
    TypeError, and the calls batched with it still run."""
    results = await asyncio.gather(
        echo("a"), echo(None), echo(True), echo(7), return_exceptions=True
    )
    assert results[0] == b"a" and results[3] == b"7"
    assert isinstance(results[1], TypeError) and isinstance(results[2], TypeError)


async def test_a_batch_survives_a_flushed_script_cache(echo: Call, redis_url: str) -> None:
    assert await echo("warm") == b"warm"
    admin = aioredis.from_url(redis_url)
    await admin.script_flush()  # as after a Redis restart
    await admin.aclose()
    results = await asyncio.gather(*(echo(str(i)) for i in range(5)))
    assert results == [str(i).encode() for i in range(5)]


async def test_the_first_caller_being_cancelled_does_not_strand_the_others(echo: Call) -> None:
    first = asyncio.ensure_future(echo("first"))  # the turn's first call starts the batch
    second = asyncio.ensure_future(echo("second"))  # the same turn: it joins
    await asyncio.sleep(0)  # both have queued their call; nothing is sent yet
    first.cancel()
    async with asyncio.timeout(5):
        assert await second == b"second"
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_a_caller_cancelled_while_its_batch_is_read_does_not_cancel_the_others(
    proxy: RedisProxy,
) -> None:
    """The batch is on the wire and Redis' replies are on their way when one caller gives up
    (a timeout, say): the others still get their replies."""
    redis = aioredis.from_url(proxy.url)
    echo = _caller(redis, ECHO)
    assert await echo("warm") == b"warm"  # connected, script cached
    proxy.hold_replies()
    first = asyncio.ensure_future(echo("first"))
    second = asyncio.ensure_future(echo("second"))
    async with asyncio.timeout(5):
        await proxy.holding.wait()  # both calls ran in Redis; their replies wait in the proxy
    first.cancel()
    await asyncio.sleep(0)
    proxy.release()
    async with asyncio.timeout(5):
        results = await asyncio.gather(first, second, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert results[1] == b"second", results[1]
    await redis.aclose()


async def test_a_reloaded_script_is_not_run_again_when_its_reply_is_lost(
    proxy: RedisProxy, redis_url: str
) -> None:
    """After a Redis restart (NOSCRIPT) the batcher loads the script and sends the call again.
    If that reply is lost, the script may have run: the caller hears of the error, and the
    script is not run a second time behind its back, whatever retry policy the client has
    for ordinary commands (here redis-py's default, which retries connection errors)."""
    redis = aioredis.Redis(host="127.0.0.1", port=proxy.port)
    assert redis.get_retry().get_retries() > 0
    count = _caller(redis, COUNT)
    admin = aioredis.from_url(redis_url)
    await admin.script_flush()
    await admin.aclose()
    proxy.drop_next_reply(lambda data: data.startswith(b":"))  # the script's reply: an integer
    async with asyncio.timeout(30):
        with pytest.raises(RedisConnectionError):
            await count()
    assert proxy.dropped.is_set()
    assert await _runs(redis_url) == 1
    await redis.aclose()


async def test_redis_dropping_mid_batch_fails_each_caller_once_and_leaves_nothing_unretrieved(
    proxy: RedisProxy, redis_url: str, unhandled: list[dict[str, Any]]
) -> None:
    """Redis goes away between running a batch and replying: every caller gets a connection
    error, no script runs twice, and asyncio logs no "Future exception was never retrieved"."""
    redis = aioredis.Redis(host="127.0.0.1", port=proxy.port)  # with redis-py's default retry
    count = _caller(redis, COUNT)
    assert await count() == 1  # connected, script cached
    proxy.drop_next_reply()
    async with asyncio.timeout(30):
        results = await asyncio.gather(*(count() for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, RedisConnectionError) for r in results), results
    assert await _runs(redis_url) == 1 + 3
    del results
    await redis.aclose()
    gc.collect()
    await asyncio.sleep(0)  # handlers called from __del__ are scheduled with call_soon
    assert [c.get("message") for c in unhandled] == []
