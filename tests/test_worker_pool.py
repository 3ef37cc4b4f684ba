"""Two workers on one queue, each with its own ComfyUI double: a job never waits behind
another while a GPU idles, and a model one worker lacks sends the job to the other."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from services.contracts import EventType, JobState
from services.worker.worker import Worker
from tests.comfyui_double import ComfyDouble, start_double
from tests.queue_harness import MakeQueue, QueueHarness
from tests.worker_harness import (
    JobEvents,
    dir_storage,
    job_events,
    running_worker,
    submit,
    txt2img,
    until,
    worker_settings,
)


def _image_job(tag: int) -> dict[str, Any]:
    return {
        "1": {"class_type": "EmptyImage",
              "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": tag}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "p"}},
    }  # fmt: skip


@contextlib.asynccontextmanager
async def two_workers(
    queue: QueueHarness,
    tmp_path: Path,
    doubles: tuple[dict[str, Any], dict[str, Any]],
    settings: tuple[dict[str, Any], dict[str, Any]] = ({}, {}),
) -> AsyncIterator[tuple[JobEvents, list[tuple[Worker, ComfyDouble]]]]:
    storage = dir_storage(tmp_path)
    async with (
        start_double(tmp_path / "c0", **doubles[0]) as c0,
        start_double(tmp_path / "c1", **doubles[1]) as c1,
        job_events(queue) as seen,
        running_worker(worker_settings(queue, c0.url, storage, "w0", **settings[0])) as w0,
        running_worker(worker_settings(queue, c1.url, storage, "w1", **settings[1])) as w1,
    ):
        yield seen, [(w0, c0), (w1, c1)]


async def test_a_job_never_waits_behind_another_while_a_worker_idles(
    queue: QueueHarness, tmp_path: Path
) -> None:
    alice, bob = await queue.client("alice"), await queue.client("bob")
    slow = {"node_time_s": {"SaveImage": 0.4}}
    async with two_workers(queue, tmp_path, (slow, slow)) as (seen, pool):
        workers = [w for w, _ in pool]
        for round_ in range(3):
            first = await submit(alice, _image_job(2 * round_))
            leased = await seen.event(first, lambda e: e["type"] == EventType.LEASED)
            busy = next(w for w in workers if w.queue.worker_id == leased["data"]["worker"])
            idle = next(w for w in workers if w is not busy)
            # The busy worker asks for a job to prefetch; the other waits idle.
            await until(lambda b=busy, i=idle: True in b._polls and False in i._polls
                        and not i.runs)  # fmt: skip
            second = await submit(bob, _image_job(2 * round_ + 1))
            got = await seen.event(second, lambda e: e["type"] == EventType.LEASED)
            assert got["data"]["worker"] == idle.queue.worker_id, round_
            for job in (first, second):
                assert (await seen.final(job))["state"] == JobState.SUCCEEDED
        # With more jobs than workers, both prefetch: each ComfyUI always has the next one.
        jobs = [await submit(alice if i % 2 else bob, _image_job(100 + i)) for i in range(6)]
        await until(lambda: all(len(w.runs) == 2 for w in workers))
        records = [await seen.final(j) for j in jobs]
        assert {r["worker"] for r in records} == {"w0", "w1"}
    for c in (alice, bob):
        await c.aclose()


async def test_a_model_missing_on_one_worker_sends_the_job_to_the_other(
    queue: QueueHarness, tmp_path: Path
) -> None:
    alice = await queue.client("alice")
    storage = dir_storage(tmp_path)
    async with (
        start_double(tmp_path / "c0") as lacking_comfy,
        start_double(tmp_path / "c1", models={"checkpoints": ["sd15.safetensors"]},
                     node_time_s={"ImageInvert": 1}) as capable_comfy,
        job_events(queue) as seen,
        running_worker(worker_settings(queue, capable_comfy.url, storage, "w1",
                                       prefetch=False)) as capable,
    ):  # fmt: skip
        # The capable worker is busy (and does not prefetch): the next job goes to the other.
        blocker = await submit(alice, _slow_job())
        await seen.event(blocker, lambda e: e["type"] == EventType.LEASED)
        async with running_worker(worker_settings(queue, lacking_comfy.url, storage)) as lacking:
            job = await submit(alice, txt2img("sd15.safetensors"))
            declined = await seen.event(job, lambda e: e["type"] == EventType.DECLINED)
            assert declined["data"] == {"worker": "w0", "reason": "declined"}
            record = await seen.final(job)
            assert record["state"] == JobState.SUCCEEDED and record["worker"] == "w1"
            assert record["attempt"] == 1  # declining spent no attempt
            assert job in capable_comfy.history and job not in lacking_comfy.history
            # A model no live worker has: both decline, it fails with ComfyUI's own error.
            nowhere = await submit(alice, txt2img("nowhere.safetensors"))
            failed = await seen.final(nowhere)
            for worker in (lacking, capable):  # a run ends just after its last report
                async with asyncio.timeout(10):
                    while worker._tasks:
                        await asyncio.wait(list(worker._tasks.values()))
            assert lacking.runs == {} and capable.runs == {}
    assert failed["state"] == JobState.FAILED
    error = failed["error"]
    assert error["error"]["type"] == "prompt_outputs_failed_validation"
    (reason,) = error["node_errors"]["4"]["errors"]
    assert reason["type"] == "value_not_in_list"
    assert reason["extra_info"]["received_value"] == "nowhere.safetensors"
    assert len(seen.of(nowhere, EventType.DECLINED)) == 1  # the second decline failed it
    await alice.aclose()


def _slow_job() -> dict[str, Any]:
    graph = _image_job(7)
    graph["3"] = {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}}
    graph["2"]["inputs"]["images"] = ["3", 0]
    return graph


async def test_a_node_class_missing_everywhere_fails_with_comfyuis_invalid_prompt(
    make_queue: MakeQueue, tmp_path: Path
) -> None:
    async with make_queue() as queue:
        alice = await queue.client("alice")
        graph = {**_image_job(1), "3": {"class_type": "NoSuchNode", "inputs": {}}}
        async with two_workers(queue, tmp_path, ({}, {})) as (seen, _):
            record = await seen.final(await submit(alice, graph))
        assert record["state"] == JobState.FAILED
        assert record["error"]["error"] == {
            "type": "invalid_prompt",
            "message": "Cannot execute because node NoSuchNode does not exist.",
            "details": "Node ID '#3'",
            "extra_info": {},
        }
        await alice.aclose()
