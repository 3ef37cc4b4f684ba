"""Run the whole platform on one machine, on embedded defaults: ``python -m services.local``.

A private Redis-compatible server keeps its append-only file under ``data/redis``, the
credentials are generated once into ``data/credentials.json`` (mode 0600), and the services
run in this process on loopback. Stop with Ctrl-C; start again and everything is still there.

A worker runs here too: attached to the ComfyUI at ``COMFYUI_URL`` (default
http://127.0.0.1:8188), or starting one from the checkout at ``COMFYUI_DIR``. Without a
ComfyUI it says so in its log and the admin view, and jobs wait in the queue.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import uvicorn

from services.contracts import (
    NOT_ROUTED_MESSAGE,
    QUEUE_PORT,
    WORKER_TOKEN_PREFIX,
    Upstream,
    participant_name,
    route_for,
    route_plan,
)
from services.gateway.app import create_app as create_gateway
from services.gateway.settings import GatewaySettings
from services.local_redis import LocalRedis
from services.queue.app import create_app
from services.queue.settings import QueueSettings
from services.serving import EmbeddedServer, start_server


def load_credentials(path: Path, participants: int) -> dict[str, Any]:
    """Create the local secrets on first run; keep them (and add participants) afterwards."""
    creds: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    creds.setdefault("token_secret", secrets.token_urlsafe(48))
    creds.setdefault("admin_password", secrets.token_urlsafe(12))
    token = WORKER_TOKEN_PREFIX + secrets.token_urlsafe(32)
    creds.setdefault("worker_tokens", {"local-gpu": token})
    users = creds.setdefault("participants", {})
    for n in range(1, participants + 1):
        users.setdefault(participant_name(n), secrets.token_urlsafe(9))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(creds, out, indent=2)
    return creds


def queue_settings(creds: dict[str, Any], redis_url: str) -> QueueSettings:
    return QueueSettings(
        redis_url=redis_url,
        token_secret=creds["token_secret"],
        admin_password=creds["admin_password"],
        users={uid: {"password": pw} for uid, pw in creds["participants"].items()},
        worker_tokens=creds["worker_tokens"],
    )


class Dispatcher:
    """One port for everything, routed as Caddy routes on the VPS (the route plan in
    services/contracts.py): the queue, each participant's ComfyUI through the gateway (by the
    user-id pattern: a participant added at runtime too), the `/<id>` -> `/<id>/` redirect,
    and 404 for the rest."""

    def __init__(self, queue: Any, gateway: Any) -> None:
        self.apps = {Upstream.QUEUE: queue, Upstream.GATEWAY: gateway}
        self.plan = route_plan()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        route = route_for(scope["path"], self.plan)
        if route is None or route.upstream is Upstream.REDIRECT:
            from starlette.responses import PlainTextResponse, RedirectResponse

            if scope["type"] != "http":
                await send({"type": "websocket.close", "code": 4404})
                return
            response = (
                RedirectResponse(scope["path"] + "/", 308)
                if route is not None
                else PlainTextResponse(NOT_ROUTED_MESSAGE, 404)
            )
            await response(scope, receive, send)
            return
        await self.apps[route.upstream](scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        """Start both apps (the queue first: the gateway calls it), stop them in reverse."""
        import contextlib

        message = await receive()
        assert message["type"] == "lifespan.startup"
        queue = self.apps[Upstream.QUEUE]
        gateway = self.apps[Upstream.GATEWAY]
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(queue.router.lifespan_context(queue))
            await stack.enter_async_context(gateway.running())
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
        await send({"type": "lifespan.shutdown.complete"})


def gateway_settings(args: argparse.Namespace, data_dir: Path) -> GatewaySettings:
    return GatewaySettings(
        queue_url=f"http://{args.host}:{args.port}",
        storage={"dir": str(data_dir / "files")},
        asset_cache_dir=data_dir / "frontend-cache",
    )


def print_banner(creds: dict[str, Any], queue_url: str, data_dir: Path) -> None:
    lines = [
        "",
        "ComfyUI workshop platform, local mode",
        f"  data directory   {data_dir}",
        f"  queue API        {queue_url}/api/   (docs: {queue_url}/api/docs)",
        f"  admin            admin / {creds['admin_password']}",
        "  participants     (each opens their own ComfyUI, signs in with name and password)",
        *(f"    {queue_url}/{u}/   {u} / {p}" for u, p in creds["participants"].items()),
        "  worker tokens    " + ", ".join(f"{n}: {t}" for n, t in creds["worker_tokens"].items()),
        f"  (all of this is in {data_dir / 'credentials.json'})",
        "Ctrl-C stops everything; the data stays.",
        "",
    ]
    print("\n".join(lines), flush=True)


async def serve(args: argparse.Namespace, creds: dict[str, Any], redis_url: str) -> None:
    queue = create_app(queue_settings(creds, redis_url))
    gateway = create_gateway(gateway_settings(args, args.data_dir))
    app = Dispatcher(queue, gateway)
    server = EmbeddedServer(
        uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")
    )
    task = await start_server(server)
    print_banner(creds, f"http://{args.host}:{args.port}", args.data_dir)
    async with local_worker(args, creds):
        await stop_requested(task)  # Ctrl-C or SIGTERM: the worker stops first
    server.should_exit = True
    await task


def local_worker_settings(args: argparse.Namespace, creds: dict[str, Any]) -> Any:
    """The local worker: this queue, the local GPU's token, files under data/files, and the
    ComfyUI at COMFYUI_URL (default http://127.0.0.1:8188) or started from COMFYUI_DIR."""
    from services.worker.settings import load_settings

    comfy: dict[str, Any] = {}
    if os.environ.get("COMFYUI_DIR"):
        comfy = {"comfyui_dir": os.environ["COMFYUI_DIR"]}
        if os.environ.get("COMFYUI_PORT"):
            comfy["comfyui_port"] = int(os.environ["COMFYUI_PORT"])
    elif os.environ.get("COMFYUI_URL"):
        comfy = {"comfyui_url": os.environ["COMFYUI_URL"]}
    return load_settings(
        queue_url=f"http://{args.host}:{args.port}",
        token=creds["worker_tokens"]["local-gpu"],
        storage={"dir": str(args.data_dir / "files")},
        lease_wait_s=2.0,  # Ctrl-C waits for the worker's long-poll
        **comfy,
    )


@contextlib.asynccontextmanager
async def local_worker(args: argparse.Namespace, creds: dict[str, Any]) -> AsyncIterator[None]:
    """Run the local worker; on the way out it hands back what it holds and leaves."""
    from services.worker.worker import Worker

    worker = Worker(local_worker_settings(args, creds))
    task = asyncio.create_task(worker.run(handle_signals=False), name="local-worker")
    try:
        yield
    finally:
        worker.stop("local mode stopping")
        await task


async def stop_requested(server_task: asyncio.Task[None]) -> None:
    """Until Ctrl-C or SIGTERM (taken over from the server, which then stops last) or the
    server's own end."""
    requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, requested.set)
    waiter = asyncio.create_task(requested.wait())
    await asyncio.wait({waiter, server_task}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()


def run(args: argparse.Namespace) -> None:
    data_dir = args.data_dir = Path(args.data_dir).resolve()
    creds = load_credentials(data_dir / "credentials.json", args.participants)
    redis_server = LocalRedis(data_dir=data_dir / "redis", port=args.redis_port).start()
    try:
        asyncio.run(serve(args, creds, redis_server.url))
    finally:
        redis_server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("COMFY_DATA_DIR", "data"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=QUEUE_PORT)
    parser.add_argument("--redis-port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--participants", type=int, default=5)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
