"""Shared fixtures: a private Redis server, queue services on real uvicorn sockets, and S3
through moto's server mode."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis

from services.local_redis import LocalRedis, free_port
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
async def replicas(redis_url: str) -> AsyncIterator[tuple[QueueHarness, QueueHarness]]:
    """Two queue replicas with the same settings on one Redis, as production may run them."""
    settings = queue_settings(redis_url)
    async with start_queue(settings) as a, start_queue(settings) as b:
        yield a, b


@pytest.fixture
def make_queue(redis_url: str) -> Any:
    """Start a queue service with overridden settings: ``async with make_queue(**kw) as q``."""

    @contextlib.asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[QueueHarness]:
        async with start_queue(queue_settings(redis_url, **overrides)) as harness:
            yield harness

    return factory


def _moto_reset(endpoint: str) -> None:
    """POST moto's reset endpoint (a plain http URL we built ourselves)."""
    import http.client

    host, port = endpoint.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("POST", "/moto-api/reset")
    assert conn.getresponse().status == 200
    conn.close()


@pytest.fixture
def s3_server() -> Iterator[tuple[str, Any]]:
    """moto in server mode over real HTTP; yields (endpoint, boto3 client) with the bucket
    `workshop-user-files`."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    # moto keeps its state in-process across servers: start every test from empty.
    _moto_reset(endpoint)
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=S3_BUCKET)
    try:
        yield endpoint, client
    finally:
        server.stop()


S3_BUCKET = "workshop-user-files"


@pytest.fixture
async def comfy(tmp_path: Path) -> AsyncIterator[Any]:
    """A ComfyUI test double with default options (tests/comfyui_double: `start_double`)."""
    from tests.comfyui_double import start_double

    async with start_double(tmp_path / "comfyui") as double:
        yield double
