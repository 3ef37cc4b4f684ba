"""The gateway's memory with many participants connected, and its event latency.

    uv run python -m bench.gateway [--participants 20 200] [--samples 300]

A private Redis and the queue (in this process), and the gateway as its own process
(`python -m services.gateway`, as deployed). Participants user001... connect one ComfyUI
WebSocket each (HTTP Basic, as a browser does); the gateway's RSS is read from /proc after
each step of `--participants`. Then, `--samples` times, a ComfyUI `progress` message of a
participant's job is appended to the queue's event stream (what the worker's relay call
does, in one Lua step) and the time until it arrives on that participant's socket is taken.

Ends with one JSON line: rss_mb_<n> per step, event_p50_ms, event_p99_ms.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvicorn
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.contracts import Role, participant_name  # noqa: E402
from services.local_redis import LocalRedis, free_port  # noqa: E402
from services.queue.app import create_app  # noqa: E402
from services.queue.auth import hash_password  # noqa: E402
from services.queue.settings import QueueSettings  # noqa: E402
from services.serving import EmbeddedServer, start_server  # noqa: E402

PASSWORD = "bench-password"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def wait_listening(url: str, proc: asyncio.subprocess.Process) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(300):
            if proc.returncode is not None:
                raise RuntimeError("the gateway exited")
            with contextlib.suppress(httpx.TransportError):
                await client.get(url + "/user001/")
                return
            await asyncio.sleep(0.1)
    raise RuntimeError("the gateway did not start")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    most = max(args.participants)
    users = {participant_name(n): n for n in range(1, most + 1)}
    shared_hash = hash_password(PASSWORD)  # one hash for all: argon2 is slow on purpose
    with tempfile.TemporaryDirectory() as tmp:
        redis = LocalRedis(data_dir=Path(tmp) / "redis").start()
        settings = QueueSettings(
            redis_url=redis.url,
            token_secret="bench-secret-bench-secret-bench-secret",
            admin_password="bench-admin-password",
            users={u: {"password_hash": shared_hash, "role": Role.PARTICIPANT} for u in users},
        )
        app = create_app(settings)
        queue_port = free_port()
        server = EmbeddedServer(
            uvicorn.Config(app, host="127.0.0.1", port=queue_port, log_level="warning")
        )
        task = await start_server(server)
        gateway_port = free_port()
        env = {
            **os.environ,
            "GATEWAY_QUEUE_URL": f"http://127.0.0.1:{queue_port}",
            "GATEWAY_PORT": str(gateway_port),
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_STORAGE__DIR": str(Path(tmp) / "files"),
            "GATEWAY_PRECOMPRESS": "false",
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.gateway", cwd=ROOT, env=env
        )
        gateway = f"http://127.0.0.1:{gateway_port}"
        sockets: dict[str, Any] = {}
        out: dict[str, Any] = {}
        try:
            await wait_listening(gateway, proc)
            out["rss_mb_0"] = round(rss_mb(proc.pid), 1)
            names = list(users)
            for step in sorted(args.participants):
                for name in names[len(sockets) : step]:
                    auth = base64.b64encode(f"{name}:{PASSWORD}".encode()).decode()
                    ws = await connect(
                        f"ws://127.0.0.1:{gateway_port}/{name}/ws?clientId=tab-{name}",
                        additional_headers={"Authorization": f"Basic {auth}"},
                    )
                    first = json.loads(await ws.recv())
                    assert first["type"] == "status", first
                    sockets[name] = ws
                await asyncio.sleep(1.0)  # let allocations settle
                out[f"rss_mb_{step}"] = round(rss_mb(proc.pid), 1)
            store = app.state.ctx.store
            latencies = []
            for i in range(args.samples):
                name = names[i % len(sockets)]
                message = {
                    "type": "progress",
                    "data": {"value": i, "max": args.samples, "prompt_id": f"p{i}", "node": "3"},
                    "client_id": f"tab-{name}",
                }
                started = time.perf_counter()
                await store.redis.xadd(
                    store.key("events"),
                    {"type": "comfy", "job": f"p{i}", "user": name, "state": "running",
                     "data": orjson.dumps(message), "wake": "0"},
                )  # fmt: skip
                while True:
                    got = json.loads(await asyncio.wait_for(sockets[name].recv(), 10))
                    if got["type"] == "progress" and got["data"]["value"] == i:
                        break
                latencies.append((time.perf_counter() - started) * 1000)
            out["event_p50_ms"] = round(statistics.median(latencies), 2)
            out["event_p99_ms"] = round(percentile(latencies, 0.99), 2)
            out["participants"] = len(sockets)
            out["samples"] = len(latencies)
        finally:
            for ws in sockets.values():
                await ws.close()
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 20)
            server.should_exit = True
            await task
            redis.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, nargs="+", default=[20, 200])
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))), flush=True)


if __name__ == "__main__":
    main()
