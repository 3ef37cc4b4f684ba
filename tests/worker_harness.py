"""Run the worker in the test's event loop against a real queue service, a ComfyUI test double
and object storage (a directory, or S3 through moto's server mode), and watch what it does."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from services.contracts import JobState
from services.worker.settings import WorkerSettings
from services.worker.worker import Worker
from tests.comfyui_double import ComfyDouble, start_double
from tests.queue_harness import WORKER_TOKENS, EventStream, QueueHarness, events

FINAL = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


def worker_settings(
    queue: QueueHarness,
    comfy_url: str | None,
    storage: dict[str, Any],
    name: str = "w0",
    **overrides: Any,
) -> WorkerSettings:
    """Test settings: attached to `comfy_url`, or (None) managing `comfyui_dir`."""
    values: dict[str, Any] = {
        "queue_url": queue.base_url,
        "token": WORKER_TOKENS[name],
        **({"comfyui_url": comfy_url} if comfy_url else {}),
        "storage": storage,
        "lease_wait_s": 0.5,
        "quiet_after_s": 1.0,
        "cancel_deadline_s": 5.0,
        "shutdown_grace_s": 10.0,
    }
    values.update(overrides)
    return WorkerSettings(**values)


async def until(predicate: Any, timeout_s: float = 15.0, what: str = "condition") -> None:
    """Wait for a condition of the worker's or the double's state (checked on every loop turn
    it could change: a short poll, bounded)."""
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - state owned by tasks in this loop
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running_worker(settings: WorkerSettings) -> AsyncIterator[Worker]:
    """A started worker, registered with its ComfyUI up; stopped (cleanly) at the end."""
    worker = Worker(settings)
    task = asyncio.create_task(worker.run(handle_signals=False))
    try:
        await until(
            lambda: task.done() or worker.registered_generation == worker.watch.generation > 0,
            what="the worker registered with ComfyUI up",
        )
        if task.done():
            await task
        yield worker
    finally:
        worker.stop("test done")
        async with asyncio.timeout(30):
            await task


async def submit(client: httpx.AsyncClient, workflow: dict[str, Any], **extra: Any) -> str:
    r = await client.post("/api/jobs", json={"workflow": workflow, **extra})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


@dataclass
class JobEvents:
    """Every queue event since it opened (as the admin sees them), by job."""

    stream: EventStream
    client: httpx.AsyncClient
    _seen: int = 0

    def of(self, job_id: str, type_: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.stream.seen
                if e["job"] == job_id and (type_ is None or e["type"] == type_)]  # fmt: skip

    async def final(self, job_id: str, timeout_s: float = 20.0) -> dict[str, Any]:
        """The job's record, once its final event came."""
        if not any(e["type"] in FINAL for e in self.of(job_id)):
            await self.stream.until(
                lambda e: e["job"] == job_id and e["type"] in FINAL, timeout_s
            )
        return (await self.client.get(f"/api/jobs/{job_id}")).json()  # type: ignore[no-any-return]

    async def event(self, job_id: str, predicate: Any, timeout_s: float = 20.0) -> dict[str, Any]:
        """The first event of the job matching `predicate` (already seen, or the next)."""
        for e in self.of(job_id):
            if predicate(e):
                return e
        return await self.stream.until(lambda e: e["job"] == job_id and predicate(e), timeout_s)


@contextlib.asynccontextmanager
async def job_events(queue: QueueHarness) -> AsyncIterator[JobEvents]:
    admin = await queue.client("admin")
    try:
        async with events(queue, "admin") as stream:
            yield JobEvents(stream, admin)
    finally:
        await admin.aclose()


def dir_storage(tmp_path: Path) -> dict[str, Any]:
    return {"dir": str(tmp_path / "files")}


@dataclass
class Setup:
    comfy: ComfyDouble
    seen: JobEvents
    worker: Worker


@contextlib.asynccontextmanager
async def one_worker(
    queue: QueueHarness,
    tmp_path: Path,
    storage: dict[str, Any] | None = None,
    worker: dict[str, Any] | None = None,
    **double: Any,
) -> AsyncIterator[Setup]:
    """A double (options `double`), the queue's events, and a worker on them."""
    async with start_double(tmp_path / "comfy", **double) as comfy, job_events(queue) as seen:
        settings = worker_settings(
            queue, comfy.url, storage or dir_storage(tmp_path), **(worker or {})
        )
        async with running_worker(settings) as running:
            yield Setup(comfy, seen, running)


def txt2img(ckpt: str) -> dict[str, Any]:
    """The traces' SD1.5 graph (model-free in the double: its nodes are simulated)."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage",
              "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "KSampler",
              "inputs": {"seed": 42, "steps": 2, "cfg": 7.0, "sampler_name": "euler",
                         "scheduler": "normal", "denoise": 1.0, "model": ["4", 0],
                         "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "sd"}},
    }  # fmt: skip
