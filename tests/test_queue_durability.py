"""Crash safety: the service killed with SIGKILL, Redis restarted from its append-only file."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from services.contracts import JobState
from services.local_redis import LocalRedis, free_port
from tests.queue_harness import (
    ADMIN_PASSWORD,
    PASSWORDS,
    WORKER_TOKENS,
    WORKFLOW,
    WorkerClient,
    queue_settings,
    start_queue,
)


@asynccontextmanager
async def service_process(redis_url: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """The queue service as its own process, the way it runs in production."""
    port = free_port()
    env = {
        **os.environ,
        "QUEUE_REDIS_URL": redis_url,
        "QUEUE_TOKEN_SECRET": "durability-test-secret-0123456789",
        "QUEUE_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "QUEUE_USERS": json.dumps({"alice": {"password": PASSWORDS["alice"]}}),
        "QUEUE_WORKER_TOKENS": json.dumps(WORKER_TOKENS),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "uvicorn", "services.queue.app:create_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port),
        env=env, stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stderr is not None
    async with asyncio.timeout(30):  # uvicorn announces readiness on stderr
        while b"Application startup complete" not in await proc.stderr.readline():
            assert proc.returncode is None, "queue service exited during startup"
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def _login(http: httpx.AsyncClient, user: str, password: str) -> dict[str, str]:
    r = await http.post("/api/auth/token", json={"username": user, "password": password})
    r.raise_for_status()
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def test_jobs_survive_sigkill_and_redis_restart(tmp_path: Path) -> None:
    redis_server = LocalRedis(data_dir=tmp_path / "redis", appendonly=True).start()
    worker_auth = {"Authorization": f"Bearer {WORKER_TOKENS['w0']}"}
    try:
        async with service_process(redis_server.url) as (proc, url):
            async with httpx.AsyncClient(base_url=url) as http:
                alice = await _login(http, "alice", PASSWORDS["alice"])
                ids = []
                for _ in range(5):
                    r = await http.post("/api/jobs", json={"workflow": WORKFLOW}, headers=alice)
                    ids.append(r.json()["id"])
                r = await http.post("/api/worker/register", json={}, headers=worker_auth)
                lease = (await http.post(
                    "/api/worker/lease", json={"worker_id": "w0"}, headers=worker_auth
                )).json()["lease"]
                await http.post(
                    f"/api/worker/jobs/{lease['job']['id']}/start",
                    json={"worker_id": "w0", "lease_id": lease["lease_id"]}, headers=worker_auth,
                )
                before = {j["id"]: j for j in (await http.get("/api/jobs", headers=alice)).json()}
            proc.send_signal(signal.SIGKILL)
            assert await proc.wait() == -signal.SIGKILL

        redis_server.stop()  # what `docker restart redis` does: SIGTERM, then start again
        assert list((tmp_path / "redis").glob("appendonlydir/*.aof")), "no append-only file"
        assert not (tmp_path / "redis" / "dump.rdb").exists()  # it came back from the AOF
        redis_server.start()

        async with (
            service_process(redis_server.url) as (_proc, url),
            httpx.AsyncClient(base_url=url) as http,
        ):
            alice = await _login(http, "alice", PASSWORDS["alice"])
            after = {j["id"]: j for j in (await http.get("/api/jobs", headers=alice)).json()}
            assert set(after) == set(ids)
            assert {i: j["state"] for i, j in after.items()} == {
                i: j["state"] for i, j in before.items()
            }
            assert after[lease["job"]["id"]]["state"] == JobState.RUNNING
            queued = [j for j in after.values() if j["state"] == JobState.QUEUED]
            assert sorted(j["position"] for j in queued) == [1, 2, 3, 4]
            # The worker that held the running job still holds its lease and finishes it.
            r = await http.post(
                f"/api/worker/jobs/{lease['job']['id']}/complete",
                json={"worker_id": "w0", "lease_id": lease["lease_id"], "outputs": {}},
                headers=worker_auth,
            )
            assert r.status_code == 204
            # And the queued ones are still served, in order.
            for expected in [i for i in ids if i != lease["job"]["id"]]:
                got = (await http.post(
                    "/api/worker/lease", json={"worker_id": "w0"}, headers=worker_auth
                )).json()["lease"]
                assert got["job"]["id"] == expected
                r = await http.post(
                    f"/api/worker/jobs/{expected}/complete",
                    json={"worker_id": "w0", "lease_id": got["lease_id"], "outputs": {}},
                    headers=worker_auth,
                )
                assert r.status_code == 204
    finally:
        redis_server.stop()


async def test_redis_killed_mid_traffic_leaves_no_unretrieved_exceptions(tmp_path: Path) -> None:
    """Redis dies (SIGKILL) while submits and leases are in flight: every request gets its
    answer (503 once Redis is gone), and asyncio reports no "Future exception was never
    retrieved" (it did, for the first caller of each batch cut off mid-reply)."""
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: unhandled.append(context))
    redis_server = LocalRedis(data_dir=tmp_path / "redis").start()
    try:
        settings = queue_settings(
            redis_server.url, max_queued_per_user=1000, history_per_user=2000
        )
        async with start_queue(settings) as queue:
            alice = await queue.client("alice")
            worker = await WorkerClient.register(queue, "w0")
            answers: list[int] = []
            enough = asyncio.Event()
            target = [100]  # answers before the kill, then 100 more after it

            async def keep_calling(call: Callable[[], Awaitable[httpx.Response]]) -> None:
                while not (enough.is_set() and len(answers) >= target[0]):
                    answers.append((await call()).status_code)
                    if len(answers) >= target[0]:
                        enough.set()

            calls = [lambda: alice.post("/api/jobs", json={"workflow": WORKFLOW})] * 16
            calls += [lambda: worker.lease_response(wait_s=0)] * 4
            running = [asyncio.ensure_future(keep_calling(c)) for c in calls]
            async with asyncio.timeout(60):
                await enough.wait()
                redis_server.kill()  # while ~20 calls are in flight
                enough.clear()
                target[0] = len(answers) + 100
                await enough.wait()
                await asyncio.gather(*running)
            assert set(answers) <= {200, 201, 503}, answers
            assert answers[-1] == 503
            await alice.aclose()
            await worker.aclose()
        gc.collect()
        await asyncio.sleep(0)  # what __del__ reported is handed over with call_soon
        assert [c.get("message") for c in unhandled] == []
    finally:
        loop.set_exception_handler(previous)
        redis_server.stop()
