"""Shared fixtures: a private Redis server, and queue services on real uvicorn sockets."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from services.local_redis import LocalRedis
from tests.queue_harness import QueueHarness, queue_settings, start_queue


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedis]:
    """One private Redis-compatible server for the session, on a free loopback port."""
    server = LocalRedis(data_dir=Path(tmp_path_factory.mktemp("redis"))).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: LocalRedis) -> str:
    """The private server, emptied for this test (it is ours alone: never port 6379)."""
    assert redis_server.port != 6379
    client = redis.Redis(port=redis_server.port)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
async def queue(redis_url: str) -> AsyncIterator[QueueHarness]:
    """A queue service with default test settings, over real HTTP."""
    async with start_queue(queue_settings(redis_url)) as harness:
        yield harness


@pytest.fixture
def make_queue(redis_url: str) -> Any:
    """Start a queue service with overridden settings: ``async with make_queue(**kw) as q``."""

    @contextlib.asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[QueueHarness]:
        async with start_queue(queue_settings(redis_url, **overrides)) as harness:
            yield harness

    return factory
