"""Fixtures for the infra tests: a private Redis server and an S3 (moto) server."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
import redis


@dataclass(frozen=True)
class RedisServer:
    """A running test Redis: a client and the URL the code under test uses."""

    client: redis.Redis
    url: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_binary(name: str, package: str) -> str:
    """Validators are part of the test: a missing one fails, it never skips."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"'{name}' not found on PATH; install it ({package})", pytrace=False)
    return path


@pytest.fixture
def infra_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of our own on a free port (never 6379), killed at teardown."""
    binary = require_binary("redis-server", "apt-get install redis-server")
    port = free_port()
    assert port != 6379
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        # Redis prints "Ready to accept connections" once it listens: wait for that line.
        assert proc.stdout is not None
        for line in proc.stdout:
            if b"Ready to accept connections" in line:
                break
        else:
            pytest.fail("redis-server exited before it was ready")
        client = redis.Redis(host="127.0.0.1", port=port)
        assert client.ping()
        yield RedisServer(client=client, url=f"redis://127.0.0.1:{port}/0")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def boto3_reset(endpoint: str) -> None:
    """POST moto's reset endpoint (a plain http URL we built ourselves)."""
    import http.client

    host, port = endpoint.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("POST", "/moto-api/reset")
    assert conn.getresponse().status == 200
    conn.close()


@pytest.fixture
def s3_server() -> Iterator[tuple[str, object]]:
    """moto in server mode over HTTP; yields (endpoint, boto3 client) with a bucket."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    # moto keeps its state in-process across servers: start every test from empty.
    boto3_reset(endpoint)
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket="workshop-user-files")
    try:
        yield endpoint, client
    finally:
        server.stop()
