"""The quick start's first command: the platform on embedded defaults, data kept on restart."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import httpx

from services.contracts import NOT_ROUTED_MESSAGE, JobState
from services.local_redis import free_port
from tests.queue_harness import WORKFLOW


async def _run_local(
    data_dir: Path, port: int, banner: list[bytes] | None = None
) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.local", "--data-dir", str(data_dir),
        "--port", str(port), "--participants", "3",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    async with asyncio.timeout(60):
        while b"Ctrl-C stops everything" not in (line := await proc.stdout.readline()):
            assert line, "local mode exited before it was ready"
            if banner is not None:
                banner.append(line)
    return proc


async def _stop(proc: asyncio.subprocess.Process) -> None:
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 30) == 0


async def test_local_mode_starts_serves_and_keeps_data(tmp_path: Path) -> None:
    port = free_port()
    banner: list[bytes] = []
    proc = await _run_local(tmp_path, port, banner)
    creds_file = tmp_path / "credentials.json"
    assert creds_file.stat().st_mode & 0o777 == 0o600
    creds = json.loads(creds_file.read_text())
    assert sorted(creds["participants"]) == ["user001", "user002", "user003"]
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base) as http:
            password = creds["participants"]["user001"]
            token = (await http.post("/api/auth/token",
                                     json={"username": "user001", "password": password})).json()
            headers = {"Authorization": f"Bearer {token['access_token']}"}
            job = (await http.post("/api/jobs", json={"workflow": WORKFLOW},
                                   headers=headers)).json()
            # Each participant's ComfyUI on the same port, through the gateway.
            assert f"{base}/user001/".encode() in b"".join(banner)
            r = await http.get("/user001")
            assert r.status_code == 308 and r.headers["location"] == "/user001/"
            auth = ("user001", password)
            page = await http.get("/user001/", auth=auth)
            assert page.status_code == 200 and "<title>ComfyUI</title>" in page.text
            queue = (await http.get("/user001/api/queue", auth=auth)).json()
            assert [entry[1] for entry in queue["queue_pending"]] == [job["id"]]
            assert (await http.get("/user002/api/queue", auth=auth)).status_code == 403
            # Any valid user id is a participant's path (by pattern); the rest is not routed.
            assert (await http.get("/elsewhere")).status_code == 308
            assert (await http.get("/")).status_code == 404
            assert (await http.get("/not%20an%20id/")).status_code == 404
    finally:
        await _stop(proc)
    assert list((tmp_path / "redis" / "appendonlydir").glob("*.aof"))

    proc = await _run_local(tmp_path, port)
    try:
        async with httpx.AsyncClient(base_url=base) as http:
            r = await http.get(f"/api/jobs/{job['id']}", headers=headers)
            assert r.status_code == 200 and r.json()["state"] == JobState.QUEUED
    finally:
        await _stop(proc)
    assert json.loads(creds_file.read_text()) == creds  # same secrets on every start


async def test_a_participant_added_at_runtime_reaches_their_comfyui(tmp_path: Path) -> None:
    """Participants are routed by pattern (services/contracts.py), not by the configured list:
    one the organizer adds while the platform runs is served at /<id>/ at once."""
    port = free_port()
    proc = await _run_local(tmp_path, port)
    creds = json.loads((tmp_path / "credentials.json").read_text())
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            token = (await http.post("/api/auth/token", json={
                "username": "admin", "password": creds["admin_password"]})).json()
            admin = {"Authorization": f"Bearer {token['access_token']}"}
            r = await http.post("/api/admin/users", headers=admin,
                                json={"id": "late.comer-1", "password": "late-password"})
            assert r.status_code == 201, r.text
            r = await http.post("/api/admin/users", headers=admin, json={"id": "Assets"})
            assert r.status_code == 400 and "reserved" in r.json()["detail"]

            r = await http.get("/late.comer-1")
            assert r.status_code == 308 and r.headers["location"] == "/late.comer-1/"
            r = await http.get("/late.comer-1/")
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
            assert NOT_ROUTED_MESSAGE not in r.text
            auth = ("late.comer-1", "late-password")
            page = await http.get("/late.comer-1/", auth=auth)
            assert page.status_code == 200 and "<title>ComfyUI</title>" in page.text
            queue = await http.get("/late.comer-1/api/queue", auth=auth)
            assert queue.status_code == 200 and queue.json()["queue_pending"] == []
            # Not anyone else's space, and the platform's own paths stay theirs.
            assert (await http.get("/user001/api/queue", auth=auth)).status_code == 403
            r = await http.get("/")
            assert (r.status_code, r.text) == (404, NOT_ROUTED_MESSAGE)
    finally:
        await _stop(proc)
