"""`front: true` on ComfyUI's `POST /userNNN/prompt` through the gateway, end to end with the
real worker on a ComfyUI double: an instructor's prompt (and the admin's, in a participant's
space) goes ahead of every participant's waiting job and runs first; a participant's `front`
is ignored (answered 200, queued in its normal place; see services/gateway/prompts.py)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.contracts import Role
from services.queue.auth import hash_password
from services.storage import DirStore
from tests.gateway_harness import ADMIN_PASSWORD, PASSWORDS, start_gateway
from tests.queue_harness import queue_settings, start_queue
from tests.test_gateway_api_client import GRAPH
from tests.worker_harness import job_events, running_worker, worker_settings

INSTRUCTOR = "user009"
PEOPLE = {**PASSWORDS, INSTRUCTOR: f"password-of-{INSTRUCTOR}"}
pytestmark = pytest.mark.timeout(60)


def _graph(tag: int) -> dict[str, Any]:
    """A distinct graph per prompt (ComfyUI would answer a repeated one from its cache)."""
    graph = copy.deepcopy(GRAPH)
    graph["1"]["inputs"]["color"] = 1000 + tag
    return graph


async def test_instructor_front_runs_first_participant_front_is_ignored(
    redis_url: str, tmp_path: Path, comfy: Any
) -> None:
    users = {u: {"password_hash": hash_password(p), "role": Role.PARTICIPANT}
             for u, p in PEOPLE.items()}  # fmt: skip
    users[INSTRUCTOR]["role"] = Role.INSTRUCTOR
    # fifo: without `front` the jobs run exactly in submit order, so any reordering is front's.
    settings = queue_settings(redis_url, users=users, mode="fifo")
    files = tmp_path / "files"
    async with (
        start_queue(settings) as queue,
        start_gateway(queue.base_url, DirStore(files)) as (gateway_url, _),
        running_worker(worker_settings(queue, comfy.url, {"dir": str(files)})) as worker,
        job_events(queue) as seen,
    ):
        admin = await queue.client("admin")
        people = {
            u: httpx.AsyncClient(base_url=gateway_url, auth=(u, p), timeout=30)
            for u, p in {**PEOPLE, "admin": ADMIN_PASSWORD}.items()
        }
        try:
            # Nothing is leased while paused, so every prompt below waits in the queue.
            assert (await admin.post("/api/admin/queue/pause")).json() == {"paused": True}
            order: list[tuple[str, str]] = []  # (who, prompt id) in submit order

            async def prompt(who: str, space: str, front: bool | None = None) -> str:
                body: dict[str, Any] = {"prompt": _graph(len(order)), "client_id": f"c-{who}"}
                if front is not None:
                    body["front"] = front
                r = await people[who].post(f"/{space}/prompt", json=body)
                assert r.status_code == 200, r.text
                answer = r.json()
                assert set(answer) == {"prompt_id", "number", "node_errors"}
                assert answer["node_errors"] == {}
                order.append((f"{who}@{space}", answer["prompt_id"]))
                return str(answer["prompt_id"])

            await prompt("user001", "user001")
            await prompt("user002", "user002")
            await prompt("user001", "user001")
            participant_front = await prompt("user003", "user003", front=True)
            await prompt("user002", "user002", front=False)
            admin_front = await prompt("admin", "user002", front=True)
            instructor_front = await prompt(INSTRUCTOR, INSTRUCTOR, front=True)
            jobs = {who_id[1]: who_id[0] for who_id in order}

            # The queue's own records: who was put in the front lane, and the job's owner.
            records = {}
            for job_id in jobs:
                r = await admin.get(f"/api/jobs/{job_id}")
                assert r.status_code == 200, r.text
                records[job_id] = r.json()
            assert records[admin_front]["user"] == "user002"  # the admin acted for user002
            assert records[instructor_front]["user"] == INSTRUCTOR
            assert records[participant_front]["user"] == "user003"
            assert all(r["state"] == "queued" for r in records.values())
            assert worker.jobs_done == 0

            assert (await admin.post("/api/admin/queue/resume")).json() == {"paused": False}
            for job_id in jobs:
                assert (await seen.final(job_id, 30))["state"] == "succeeded"
            assert all(
                entry["status"]["status_str"] == "success" for entry in comfy.history.values()
            )
            ran = [jobs[prompt_id] for prompt_id in comfy.history]  # ComfyUI runs one at a time
            starts = [
                dict(entry["status"]["messages"])["execution_start"]["timestamp"]
                for entry in comfy.history.values()
            ]
            assert starts == sorted(starts)
            # The front lane's head is the last one put there (as a bump); then fifo order,
            # the participant's `front` included in its submit place.
            assert ran == [
                f"{INSTRUCTOR}@{INSTRUCTOR}",
                "admin@user002",
                "user001@user001",
                "user002@user002",
                "user001@user001",
                "user003@user003",
                "user002@user002",
            ], ran
            # Each owner sees their own job in their own space's history.
            history = (await people["user003"].get("/user003/history")).json()
            assert list(history) == [participant_front]
            history = (await people[INSTRUCTOR].get(f"/{INSTRUCTOR}/history")).json()
            assert list(history) == [instructor_front]
        finally:
            for client in people.values():
                await client.aclose()
            await admin.aclose()


async def test_participant_front_is_not_sent_to_the_queue(
    redis_url: str, tmp_path: Path, comfy: Any
) -> None:
    """The queue would answer a participant's `front` with 403; the gateway never sends it,
    so the participant's ComfyUI client gets ComfyUI's plain 200."""
    users = {u: {"password_hash": hash_password(p), "role": Role.PARTICIPANT}
             for u, p in PASSWORDS.items()}  # fmt: skip
    files = tmp_path / "files"
    async with (
        start_queue(queue_settings(redis_url, users=users)) as queue,
        start_gateway(queue.base_url, DirStore(files)) as (gateway_url, _),
        running_worker(worker_settings(queue, comfy.url, {"dir": str(files)})),
        httpx.AsyncClient(base_url=gateway_url, auth=("user001", PASSWORDS["user001"])) as u1,
        job_events(queue) as seen,
    ):
        # Straight to the queue, the same participant is refused (the gateway's reason to drop
        # the flag rather than forward it).
        async with httpx.AsyncClient(base_url=queue.base_url) as direct:
            login = {"username": "user001", "password": PASSWORDS["user001"]}
            bearer = (await direct.post("/api/auth/token", json=login)).json()["access_token"]
            r = await direct.post(
                "/api/jobs", json={"workflow": _graph(1), "front": True},
                headers={"Authorization": f"Bearer {bearer}"},
            )  # fmt: skip
            assert r.status_code == 403 and "front" in r.json()["detail"], r.text
        r = await u1.post("/user001/prompt", json={"prompt": _graph(2), "front": True})
        assert r.status_code == 200, r.text
        prompt_id = r.json()["prompt_id"]
        assert (await seen.final(prompt_id, 30))["state"] == "succeeded"
        history = (await u1.get(f"/user001/history/{prompt_id}")).json()
        assert history[prompt_id]["status"]["status_str"] == "success"
