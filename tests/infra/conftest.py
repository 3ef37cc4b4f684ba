"""Fixtures for the infra tests: a private Redis server and an S3 (moto) server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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


VENV_BIN = Path(sys.executable).parent


def tool(name: str, package: str) -> str:
    """A validator from the locked environment (the venv), else from PATH; never skipped."""
    local = VENV_BIN / name
    return str(local) if local.exists() else require_binary(name, package)


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
