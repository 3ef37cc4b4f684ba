"""Crash safety: the service killed with SIGKILL, Redis restarted from its append-only file."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from services.contracts import JobState
from services.local_redis import LocalRedis, free_port
from tests.queue_harness import ADMIN_PASSWORD, PASSWORDS, WORKER_TOKENS, WORKFLOW


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
