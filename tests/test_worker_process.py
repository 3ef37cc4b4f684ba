"""The worker as a process and as a supervisor: SIGTERM mid-job, a managed ComfyUI started
from a checkout (thread limits, crash and restart), settings that explain themselves, no
ComfyUI at all (what `make up` shows), the status file, idle exit, a cancel ComfyUI ignores."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from services.contracts import EventType, JobState
from services.local_redis import free_port
from services.worker.settings import SettingsError, load_settings
from services.worker.worker import Worker
from tests.comfyui_double import start_double
from tests.queue_harness import WORKER_TOKENS, EventStream, MakeQueue, QueueHarness
from tests.worker_harness import (
    dir_storage,
    job_events,
    one_worker,
    running_worker,
    submit,
    until,
    worker_settings,
)

ROOT = Path(__file__).resolve().parents[1]
FAKE_CHECKOUT = ROOT / "tests" / "comfyui_double" / "fake_checkout"


def _job(tag: int) -> dict[str, Any]:
    return {
        "1": {"class_type": "EmptyImage",
              "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": tag}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "p"}},
    }  # fmt: skip


@contextlib.asynccontextmanager
async def worker_process(env: dict[str, str]) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m services.worker`, until it logged its registration with ComfyUI up."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.worker", cwd=ROOT, env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30):
            while True:
                line = await proc.stdout.readline()
                assert line, "the worker exited before it registered"
                if b'"registered"' in line and b'"comfyui_up": true' in line:
                    break
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_sigterm_hands_the_prefetched_job_back_at_once_and_lets_the_running_one_finish(
    queue: QueueHarness, tmp_path: Path
) -> None:
    alice = await queue.client("alice")
    async with start_double(tmp_path / "comfy", node_time_s={"ImageInvert": 1.5}) as comfy, \
            job_events(queue) as seen:  # fmt: skip
        env = {
            "WORKER_QUEUE_URL": queue.base_url, "WORKER_TOKEN": WORKER_TOKENS["w0"],
            "WORKER_COMFYUI_URL": comfy.url, "WORKER_STORAGE__DIR": str(tmp_path / "files"),
            "WORKER_SHUTDOWN_GRACE_S": "20", "WORKER_LEASE_WAIT_S": "0.5",
            "WORKER_STATUS_FILE": str(tmp_path / "status.json"),
        }  # fmt: skip
        async with worker_process(env) as proc:
            running = await submit(alice, _job(1))
            await seen.event(running, lambda e: e["type"] == EventType.RUNNING)
            prefetched = await submit(alice, _job(2))
            server = comfy.server
            assert server is not None
            await until(lambda: any(i.prompt_id == prefetched for i in server.queue.heap))
            proc.send_signal(signal.SIGTERM)
            back = await seen.event(prefetched, lambda e: e["type"] == EventType.REQUEUED)
            assert back["data"] == {"reason": "worker_released"}
            assert not any(e["type"] == EventType.SUCCEEDED for e in seen.of(running))
            assert not server.queue.heap  # taken out of ComfyUI's queue too
            done = await seen.final(running)
            assert await asyncio.wait_for(proc.wait(), 30) == 0
        status = json.loads((tmp_path / "status.json").read_text())
    assert done["state"] == JobState.SUCCEEDED  # finished within the grace period
    record = (await alice.get(f"/api/jobs/{prefetched}")).json()
    assert record["state"] == JobState.QUEUED and record["attempt"] == 0
    assert status["state"] == "draining" and status["jobs_done"] == 1
    assert isinstance(status["queue_ok_at"], float) and status["comfyui"] == "up"
    await alice.aclose()


async def test_a_running_job_past_the_shutdown_grace_is_handed_back_unspent(
    queue: QueueHarness, tmp_path: Path
) -> None:
    alice = await queue.client("alice")
    async with one_worker(queue, tmp_path, worker={"shutdown_grace_s": 0.3},
                          node_time_s={"ImageInvert": 30}) as setup:  # fmt: skip
        job = await submit(alice, _job(3))
        await setup.seen.event(job, lambda e: e["type"] == EventType.RUNNING)
        setup.worker.stop("SIGTERM")
        back = await setup.seen.event(job, lambda e: e["type"] == EventType.REQUEUED)
        assert back["data"] == {"reason": "worker_released"}
        await until(lambda: setup.comfy.stats().prompts_interrupted == 1)  # ComfyUI stopped it
    record = (await alice.get(f"/api/jobs/{job}")).json()
    assert record["state"] == JobState.QUEUED and record["attempt"] == 0
    await alice.aclose()


def _child_env(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


async def test_a_managed_comfyui_is_started_thread_limited_and_restarted_when_it_dies(
    queue: QueueHarness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMFY_DOUBLE_CRASH_ON_PROMPT", "2")  # each ComfyUI dies on its 2nd
    monkeypatch.setenv("COMFY_DOUBLE_ROOT", str(tmp_path / "comfy-root"))
    alice = await queue.client("alice")
    port = free_port()
    settings = worker_settings(
        queue, None, dir_storage(tmp_path), comfyui_dir=FAKE_CHECKOUT, comfyui_port=port,
        cuda_device=1, comfyui_args="--preview-method none",
    )  # fmt: skip
    async with job_events(queue) as seen, running_worker(settings) as worker:
        supervisor = worker.watch
        process = supervisor.process  # type: ignore[attr-defined]
        env = _child_env(process.pid)
        assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "2"
        argv = supervisor.stats["system"]["argv"]  # type: ignore[index]
        assert argv == ["main.py", "--listen", "127.0.0.1", "--port", str(port),
                        "--disable-auto-launch", "--cuda-device", "1",
                        "--preview-method", "none"]  # fmt: skip
        first = await seen.final(await submit(alice, _job(4)))
        assert first["state"] == JobState.SUCCEEDED
        crashing = await submit(alice, _job(5))  # ComfyUI dies when it starts this one
        requeued = await seen.event(crashing, lambda e: e["type"] == EventType.REQUEUED)
        assert requeued["data"]["type"] == "comfyui_died"
        record = await seen.final(crashing)
        assert supervisor.restarts == 1  # type: ignore[attr-defined]
        assert supervisor.process.pid != process.pid  # type: ignore[attr-defined]
    assert record["state"] == JobState.SUCCEEDED and record["attempt"] == 2
    assert process.returncode is not None
    await alice.aclose()


async def test_a_job_that_kills_comfyui_every_time_ends_failed(
    make_queue: MakeQueue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMFY_DOUBLE_CRASH_ON_PROMPT", "1")
    monkeypatch.setenv("COMFY_DOUBLE_ROOT", str(tmp_path / "comfy-root"))
    async with make_queue(max_attempts=2) as queue:
        alice = await queue.client("alice")
        port = free_port()
        settings = worker_settings(queue, None, dir_storage(tmp_path),
                                   comfyui_dir=FAKE_CHECKOUT, comfyui_port=port)  # fmt: skip
        async with job_events(queue) as seen, running_worker(settings) as worker:
            record = await seen.final(await submit(alice, _job(6)), timeout_s=30)
            assert worker.watch.restarts == 2  # type: ignore[attr-defined]
        assert record["state"] == JobState.FAILED and record["attempt"] == 2
        assert record["error"]["type"] == "comfyui_died"
        await alice.aclose()


def test_settings_say_what_is_wrong_and_how_to_fix_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in [n for n in os.environ if n.startswith("WORKER_")]:
        monkeypatch.delenv(name)
    with pytest.raises(SettingsError) as missing:
        load_settings()
    text = str(missing.value)
    assert "WORKER_QUEUE_URL: not set; set it to the queue's URL" in text
    assert "WORKER_TOKEN: not set; set it to this host's worker token (cqw_...)" in text
    assert "WORKER_STORAGE: not set; set it to WORKER_STORAGE__DIR=<folder> (local)" in text

    monkeypatch.setenv("WORKER_QUEUE_URL", "queue:8000")
    monkeypatch.setenv("WORKER_TOKEN", "not-a-worker-token")
    monkeypatch.setenv("WORKER_STORAGE__DIR", str(tmp_path))
    monkeypatch.setenv("WORKER_COMFYUI_DIR", str(tmp_path))
    monkeypatch.setenv("WORKER_COMFYUI_PORT", "99999")
    with pytest.raises(SettingsError) as wrong:
        load_settings()
    text = str(wrong.value)
    assert "WORKER_QUEUE_URL: 'queue:8000' is not an http(s) URL" in text
    assert "WORKER_TOKEN: a worker token starts with 'cqw_'" in text
    assert f"WORKER_COMFYUI_DIR: {tmp_path} holds no main.py" in text
    assert "WORKER_COMFYUI_PORT: Input should be less than or equal to 65535" in text

    monkeypatch.setenv("WORKER_QUEUE_URL", "http://127.0.0.1:8000")
    monkeypatch.setenv("WORKER_TOKEN", WORKER_TOKENS["w0"])
    monkeypatch.setenv("WORKER_COMFYUI_DIR", str(FAKE_CHECKOUT))
    monkeypatch.setenv("WORKER_COMFYUI_PORT", "8190")
    monkeypatch.setenv("WORKER_COMFYUI_URL", "http://127.0.0.1:8188")
    with pytest.raises(SettingsError, match="not both"):
        load_settings()
    monkeypatch.delenv("WORKER_COMFYUI_URL")
    settings = load_settings()
    assert settings.managed and settings.comfyui_base_url == "http://127.0.0.1:8190"
    assert settings.storage.dir == tmp_path


async def test_bad_settings_exit_2_with_the_explanation() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.worker", cwd=ROOT, env={**env, "WORKER_TOKEN": "x"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert b"WORKER_QUEUE_URL: not set" in err and b"WORKER_TOKEN: a worker token" in err


async def test_without_comfyui_the_worker_says_so_and_jobs_wait(
    queue: QueueHarness, tmp_path: Path
) -> None:
    port = free_port()
    alice, admin = await queue.client("alice"), await queue.client("admin")
    status_file = tmp_path / "status.json"
    settings = worker_settings(queue, f"http://127.0.0.1:{port}", dir_storage(tmp_path),
                               status_file=status_file)  # fmt: skip
    worker = Worker(settings)
    task = asyncio.create_task(worker.run(handle_signals=False))
    try:
        await until(lambda: worker.queue.worker_id != "" and worker.queue.ok_at is not None)
        job = await submit(alice, _job(7))

        async def reported() -> dict[str, Any]:
            (info,) = (await admin.get("/api/admin/workers")).json()
            return info

        async with asyncio.timeout(10):
            while (info := await reported())["status"] is None:  # noqa: ASYNC110
                await asyncio.sleep(0.1)  # the next heartbeat
        assert info["status"]["comfyui"] == "down" and info["status"]["state"] == "starting"
        assert info["status"]["comfyui_reason"].startswith(
            f"no ComfyUI reachable at http://127.0.0.1:{port}"
        )
        assert info["info"]["comfyui"] == {"version": None, "url": f"http://127.0.0.1:{port}",
                                           "up": False}  # fmt: skip
        assert json.loads(status_file.read_text())["comfyui"] == "down"
        assert (await alice.get(f"/api/jobs/{job}")).json()["state"] == JobState.QUEUED
        # ComfyUI appears: the worker registers it and runs the waiting job.
        async with start_double(tmp_path / "comfy", port=port), job_events(queue) as seen:
            record = await seen.final(job)
            assert record["state"] == JobState.SUCCEEDED
            # The queue records the success before the worker counts it in its status file.
            await until(lambda: json.loads(status_file.read_text())["jobs_done"] == 1)
            status = json.loads(status_file.read_text())
            assert status["comfyui"] == "up"
            assert status["state"] == "idle" and status["last_busy_at"] > 0
    finally:
        worker.stop("test done")
        await asyncio.wait_for(task, 30)
    for c in (alice, admin):
        await c.aclose()


async def test_idle_exit_stops_the_worker_by_itself(queue: QueueHarness, tmp_path: Path) -> None:
    async with start_double(tmp_path / "comfy") as comfy:
        settings = worker_settings(queue, comfy.url, dir_storage(tmp_path), idle_exit_s=0.5)
        worker = Worker(settings)
        assert await asyncio.wait_for(worker.run(handle_signals=False), 20) == 0
        assert worker.stopping.is_set() and worker.jobs_done == 0


async def test_a_cancel_comfyui_ignores_is_reported_after_the_deadline(
    queue: QueueHarness, tmp_path: Path
) -> None:
    alice = await queue.client("alice")
    async with one_worker(queue, tmp_path, worker={"cancel_deadline_s": 0.3},
                          node_time_s={"ImageInvert": 1.5}) as setup:  # fmt: skip
        server = setup.comfy.server
        assert server is not None
        server.executor.interrupt = lambda: None  # type: ignore[method-assign]
        job = await submit(alice, _job(8))
        await setup.seen.event(job, lambda e: e["type"] == EventType.RUNNING)
        assert (await alice.post(f"/api/jobs/{job}/cancel")).status_code == 200
        record = await setup.seen.final(job)
        assert record["state"] == JobState.CANCELLED
        # The worker goes on once ComfyUI is done with it.
        quick = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8,
                                                              "batch_size": 1, "color": 0}},
                 "2": {"class_type": "SaveImage",
                       "inputs": {"images": ["1", 0], "filename_prefix": "q"}}}  # fmt: skip
        after = await setup.seen.final(await submit(alice, quick))
        assert after["state"] == JobState.SUCCEEDED
    await alice.aclose()


async def test_make_up_runs_a_worker_that_says_when_no_comfyui_is_there(tmp_path: Path) -> None:
    """`python -m services.local` with no ComfyUI: the log and the admin view say so, a job
    waits; a ComfyUI appears on the port and the job runs."""
    comfy_port, port = free_port(), free_port()
    env = {**os.environ, "COMFYUI_URL": f"http://127.0.0.1:{comfy_port}"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.local", "--data-dir", str(tmp_path / "data"),
        "--port", str(port), "--participants", "1", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(60):
            while b"no ComfyUI reachable at http://127.0.0.1:" not in (
                line := await proc.stdout.readline()
            ):
                assert line, "local mode exited"
        creds = json.loads((tmp_path / "data" / "credentials.json").read_text())
        import httpx

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            token = (await http.post("/api/auth/token", json={
                "username": "admin", "password": creds["admin_password"]})).json()  # fmt: skip
            http.headers["Authorization"] = f"Bearer {token['access_token']}"
            async with asyncio.timeout(20):
                while True:  # the worker's first heartbeat
                    workers = (await http.get("/api/admin/workers")).json()
                    if workers and workers[0]["status"]:
                        break
                    await asyncio.sleep(0.1)
            (worker,) = workers
            assert worker["id"] == "local-gpu" and worker["status"]["comfyui"] == "down"
            assert "no ComfyUI reachable" in worker["status"]["comfyui_reason"]
            job = await submit(http, _job(10), user="user001")
            from websockets.asyncio.client import connect

            url = f"ws://127.0.0.1:{port}/api/events"
            auth = {"Authorization": http.headers["Authorization"]}
            async with connect(url, additional_headers=auth) as ws, start_double(
                tmp_path / "comfy", port=comfy_port
            ):
                stream = EventStream(ws)
                ended = await stream.until(lambda e: e["job"] == job and e["type"] in (
                    "succeeded", "failed"), timeout_s=30)  # fmt: skip
            assert ended["type"] == "succeeded"
        assert list((tmp_path / "data" / "files" / "users" / "user001" / "output").rglob("*.png"))
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
