"""The worker end to end: the real queue service and Redis, the ComfyUI test double, S3
through moto's server mode (issue 9's acceptance tests)."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from PIL import Image

from services.contracts import EventType, JobState, input_key
from services.local_redis import free_port
from services.worker.worker import Worker
from tests.comfyui_double import start_double
from tests.queue_harness import QueueHarness
from tests.worker_harness import (
    dir_storage,
    one_worker,
    submit,
    txt2img,
    until,
    worker_settings,
)

BUCKET = "worker-test-files"

#: EmptyImage -> SaveImage (output) and PreviewImage (temp); EmptyLatentImage -> SaveLatent (a
#: non-image file in a subfolder); PreviewAny (a text output, no file).
MANY_OUTPUTS = {
    "1": {"class_type": "EmptyImage",
          "inputs": {"width": 32, "height": 24, "batch_size": 2, "color": 0x3366CC}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "many"}},
    "3": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    "5": {"class_type": "SaveLatent",
          "inputs": {"samples": ["4", 0], "filename_prefix": "latents/lat"}},
    "6": {"class_type": "PreviewAny", "inputs": {"source": "a text output"}},
}  # fmt: skip


@pytest.fixture(scope="module")
def moto() -> Iterator[tuple[str, Any]]:
    """One moto S3 server for this module's tests (each test uses its own job ids)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test",
                          aws_secret_access_key="test", region_name="us-east-1")  # fmt: skip
    yield endpoint, client
    server.stop()


@pytest.fixture
def s3(moto: tuple[str, Any]) -> tuple[dict[str, Any], Any]:
    """Worker storage settings for the bucket, and a boto3 client to look into it."""
    endpoint, client = moto
    if BUCKET not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=BUCKET)  # (other tests reset moto's state)
    storage = {"bucket": BUCKET, "endpoint": endpoint, "access_key_id": "test",
               "secret_access_key": "test", "region": "us-east-1"}  # fmt: skip
    return storage, client


def _object(client: Any, key: str) -> bytes:
    return client.get_object(Bucket=BUCKET, Key=key)["Body"].read()  # type: ignore[no-any-return]


def _exists(client: Any, key: str) -> bool:
    try:
        client.head_object(Bucket=BUCKET, Key=key)
    except client.exceptions.ClientError:
        return False
    return True


def _comfy(message_type: str) -> Any:
    """An event predicate: the relayed ComfyUI message of that type."""
    return lambda e: e["type"] == EventType.COMFY and e["data"]["type"] == message_type


def _file_entries(output: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for values in output.values() if isinstance(values, list)
            for e in values if isinstance(e, dict) and "filename" in e]  # fmt: skip


async def test_success_stores_every_output_and_relays_in_comfyuis_order(
    queue: QueueHarness, s3: tuple[dict[str, Any], Any], tmp_path: Path
) -> None:
    storage, client = s3
    alice = await queue.client("alice")
    async with one_worker(queue, tmp_path, storage, job_time_s=0.1) as setup:
        seen, worker = setup.seen, setup.worker
        relayed_files: list[str] = []
        relay = worker.queue.relay

        async def relay_checking_files(job_id: str, lease_id: str, messages: list) -> bool:
            """An `executed` message may name only files already in storage."""
            for m in messages:
                if m["type"] == "executed":
                    for entry in _file_entries(m["data"]["output"]):
                        assert await asyncio.to_thread(_exists, client, entry["key"])
                        relayed_files.append(entry["key"])
            return await relay(job_id, lease_id, messages)

        worker.queue.relay = relay_checking_files  # type: ignore[method-assign]
        job_id = await submit(alice, MANY_OUTPUTS, client_id="alice-tab")
        job = await seen.final(job_id)

    assert job["state"] == JobState.SUCCEEDED, job
    outputs = job["outputs"]
    assert set(outputs) == {"2", "3", "5", "6"}
    assert outputs["6"] == {"text": ["a text output"]}
    saved = outputs["2"]["images"]
    assert [e["filename"] for e in saved] == ["many_00001_.png", "many_00002_.png"]
    assert all(e["subfolder"] == job_id and e["type"] == "output" for e in saved)
    assert saved[0]["key"] == f"users/alice/output/{job_id}/many_00001_.png"
    (latent,) = outputs["5"]["latents"]
    assert latent == {"filename": "lat_00001_.latent", "subfolder": f"{job_id}/latents",
                      "type": "output",
                      "key": f"users/alice/output/{job_id}/latents/lat_00001_.latent"}  # fmt: skip
    (preview,) = outputs["3"]["images"][:1]
    assert preview["type"] == "temp" and preview["key"].startswith(f"users/alice/temp/{job_id}/")
    # Every file is stored, byte for byte what ComfyUI wrote.
    comfy_root = tmp_path / "comfy"
    for entry in _file_entries(outputs["2"]) + _file_entries(outputs["5"]):
        local = comfy_root / "output" / entry["subfolder"].removeprefix(job_id).strip("/")
        assert _object(client, entry["key"]) == (local / entry["filename"]).read_bytes()
    with Image.open(io.BytesIO(_object(client, saved[1]["key"]))) as image:
        assert image.size == (32, 24)
    assert sorted(relayed_files) == sorted(e["key"] for o in outputs.values()
                                           for e in _file_entries(o))  # fmt: skip

    # ComfyUI's messages reached the event stream in ComfyUI's order, for alice's tab.
    comfy_events = seen.of(job_id, EventType.COMFY)
    types = [e["data"]["type"] for e in comfy_events]
    assert types[:2] == ["execution_start", "execution_cached"]
    assert types[-2:] == ["execution_success", "executing"]  # executing {node: null}: the end
    assert comfy_events[-1]["data"]["data"] == {"node": None, "prompt_id": job_id}
    assert types.count("executed") == 4 and "progress_state" in types and "executing" in types
    assert all(e["data"]["client_id"] == "alice-tab" and e["user"] == "alice"
               for e in comfy_events)  # fmt: skip
    assert all(e["data"]["data"]["prompt_id"] == job_id for e in comfy_events)
    states = [e["type"] for e in seen.of(job_id) if e["type"] != EventType.COMFY]
    assert states == [EventType.QUEUED, EventType.LEASED, EventType.RUNNING, EventType.SUCCEEDED]
    # The queue's running event comes before ComfyUI's first message, its success after the last.
    kinds = [e["type"] for e in seen.of(job_id)]
    assert kinds.index(EventType.RUNNING) < kinds.index(EventType.COMFY)
    assert kinds[-1] == EventType.SUCCEEDED
    # GPU time from ComfyUI's own timestamps; its history's status and meta.
    start = next(e for e in comfy_events if e["data"]["type"] == "execution_start")
    end = comfy_events[-2]
    assert job["gpu_ms"] == end["data"]["data"]["timestamp"] - start["data"]["data"]["timestamp"]
    assert job["gpu_ms"] >= 90
    assert job["history"]["status"]["status_str"] == "success"
    assert set(job["history"]["meta"]) == {"2", "3", "5", "6"}
    await alice.aclose()



def _png(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, "PNG")
    return buffer.getvalue()


def _load_and_save(image: str, prefix: str = "loaded") -> dict[str, Any]:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


async def test_each_participant_gets_their_own_uploaded_file(
    queue: QueueHarness, s3: tuple[dict[str, Any], Any], tmp_path: Path
) -> None:
    storage, client = s3
    red, blue = _png((255, 0, 0)), _png((0, 0, 255))
    client.put_object(Bucket=BUCKET, Key=input_key("alice", "", "photo.png"), Body=red)
    client.put_object(Bucket=BUCKET, Key=input_key("bob", "trip", "photo.png"), Body=blue)
    alice, bob = await queue.client("alice"), await queue.client("bob")
    async with one_worker(queue, tmp_path, storage) as setup:
        a = await submit(alice, _load_and_save("photo.png"))
        b = await submit(bob, _load_and_save("trip/photo.png"))
        missing = await submit(bob, _load_and_save("photo.png"))  # bob has none at the top
        done = {j: await setup.seen.final(j) for j in (a, b, missing)}
        staged = setup.comfy.files["input"]
    for job_id, user, color in ((a, "alice", (255, 0, 0)), (b, "bob", (0, 0, 255))):
        assert done[job_id]["state"] == JobState.SUCCEEDED, done[job_id]
        (entry,) = done[job_id]["outputs"]["2"]["images"]
        with Image.open(io.BytesIO(_object(client, entry["key"]))) as image:
            assert image.convert("RGB").getpixel((0, 0)) == color, user
    # Each file went into ComfyUI under its owner's own folder; nobody's at the top level.
    assert any(f.startswith("workshop/alice/") and f.endswith("/photo.png") for f in staged)
    assert any(f.startswith("workshop/bob/") and f.endswith("/photo.png") for f in staged)
    assert "photo.png" not in staged
    # A file the participant does not have: ComfyUI's own validation error, in their names.
    failed = done[missing]
    assert failed["state"] == JobState.FAILED and failed["attempt"] == 1
    assert failed["error"]["error"]["type"] == "prompt_outputs_failed_validation"
    (reason,) = failed["error"]["node_errors"]["1"]["errors"]
    assert reason["type"] == "custom_validation_failed"
    assert reason["details"] == "image - Invalid image file: photo.png"
    for c in (alice, bob):
        await c.aclose()


async def test_comfyuis_errors_are_reported_in_its_own_shape_and_not_retried(
    queue: QueueHarness, tmp_path: Path
) -> None:
    alice = await queue.client("alice")
    invalid = {"1": {"class_type": "EmptyImage", "inputs": {"width": 32}},
               "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}}}
    async with one_worker(queue, tmp_path) as setup:
        seen = setup.seen
        rejected = await submit(alice, invalid)
        bad = await seen.final(rejected)
        setup.comfy.fail_next("SaveLatent", "RuntimeError", "latent went wrong")
        crashed = await submit(alice, MANY_OUTPUTS)
        err = await seen.final(crashed)
    # ComfyUI's 400: its {error, node_errors} body as the job's error, one attempt only.
    assert bad["state"] == JobState.FAILED and bad["attempt"] == 1
    assert bad["error"]["error"]["type"] == "prompt_outputs_failed_validation"
    assert bad["error"]["node_errors"]["1"]["errors"][0]["type"] == "required_input_missing"
    # execution_error: ComfyUI's message data as the error; what ran before it is stored.
    assert err["state"] == JobState.FAILED and err["attempt"] == 1
    assert err["error"]["exception_type"] == "RuntimeError"
    assert err["error"]["exception_message"].startswith("latent went wrong")
    assert err["error"]["node_id"] == "5" and err["error"]["node_type"] == "SaveLatent"
    assert {"traceback", "current_inputs", "executed", "prompt_id"} <= set(err["error"])
    assert err["history"]["status"]["status_str"] == "error" and err["gpu_ms"] is not None
    relayed = [e["data"] for e in seen.of(crashed, EventType.COMFY)]
    assert [m["type"] for m in relayed[-2:]] == ["execution_error", "executing"]
    stored = [e["data"]["output"] for e in relayed if e["type"] == "executed"]
    assert stored and _all_stored(tmp_path, stored)
    await alice.aclose()


SLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "s"}},
}


def _all_stored(tmp_path: Path, outputs: list[Any]) -> bool:
    files = dir_storage(tmp_path)["dir"]
    return all(Path(files, f["key"]).is_file() for o in outputs for f in _file_entries(o))


def _slow(tag: int) -> dict[str, Any]:
    """SLOW, different each time (ComfyUI would answer an identical graph from its cache)."""
    graph = {k: {**v, "inputs": dict(v["inputs"])} for k, v in SLOW.items()}
    graph["1"]["inputs"]["color"] = tag
    return graph


async def test_cancel_interrupts_the_running_job_and_unqueues_the_prefetched_one(
    queue: QueueHarness, tmp_path: Path
) -> None:
    alice = await queue.client("alice")
    async with one_worker(queue, tmp_path, node_time_s={"ImageInvert": 30}) as setup:
        comfy, seen = setup.comfy, setup.seen
        running = await submit(alice, _slow(1))
        await seen.event(running, _comfy("executing"))
        prefetched = await submit(alice, _slow(2))
        server = comfy.server
        assert server is not None
        await until(lambda: any(i.prompt_id == prefetched for i in server.queue.heap))
        # The prefetched job waits inside ComfyUI, behind the running one: cancel it.
        assert (await alice.post(f"/api/jobs/{prefetched}/cancel")).status_code == 200
        assert (await seen.final(prefetched))["state"] == JobState.CANCELLED
        assert not server.queue.heap and prefetched not in comfy.history
        # Now the running one: ComfyUI is interrupted, the job ends cancelled.
        assert (await alice.post(f"/api/jobs/{running}/cancel")).status_code == 200
        assert (await seen.final(running, timeout_s=10))["state"] == JobState.CANCELLED
        assert comfy.history[running]["status"]["messages"][-1][0] == "execution_interrupted"
        relayed = [e["data"]["type"] for e in seen.of(running, EventType.COMFY)]
        assert relayed[-2:] == ["execution_interrupted", "executing"]
        assert comfy.stats().prompts_interrupted == 1
    await alice.aclose()


async def test_comfyui_killed_mid_job_requeues_it_and_the_worker_goes_on(
    queue: QueueHarness, tmp_path: Path
) -> None:
    alice = await queue.client("alice")
    async with one_worker(queue, tmp_path, node_time_s={"ImageInvert": 30}) as setup:
        comfy, seen, w = setup.comfy, setup.seen, setup.worker
        job = await submit(alice, _slow(3))
        await seen.event(job, _comfy("executing"))
        await comfy.kill()
        requeued = await seen.event(job, lambda e: e["type"] == EventType.REQUEUED)
        assert requeued["data"]["type"] == "comfyui_died"
        await until(lambda: not w.watch.up.is_set())
        assert w.status()["comfyui"] == "down" and w.status()["state"] == "idle"
        comfy.timing.node_time_s.clear()
        await comfy.restart()
        record = await seen.final(job)
    assert record["state"] == JobState.SUCCEEDED
    assert record["attempt"] == 2  # the attempt that killed ComfyUI counts
    assert record["outputs"]["3"]["images"][0]["key"].startswith(f"users/alice/output/{job}/")
    await alice.aclose()


async def test_a_quiet_websocket_falls_back_to_the_history(
    queue: QueueHarness, tmp_path: Path
) -> None:
    alice = await queue.client("alice")
    async with one_worker(queue, tmp_path, worker={"quiet_after_s": 0.3}) as setup:
        setup.comfy.quiet_ws()
        job = await submit(alice, MANY_OUTPUTS)
        record = await setup.seen.final(job)
        seen = setup.seen
    assert record["state"] == JobState.SUCCEEDED
    assert set(record["outputs"]) == {"2", "3", "5", "6"}
    assert _all_stored(tmp_path, list(record["outputs"].values()))
    # What the history recorded was relayed instead: start, cached, each output, success.
    relayed = [e["data"]["type"] for e in seen.of(job, EventType.COMFY)]
    assert relayed == ["execution_start", "execution_cached", *["executed"] * 4,
                       "execution_success", "executing"]  # fmt: skip
    assert record["gpu_ms"] is not None
    await alice.aclose()


async def test_a_cached_rerun_stores_its_own_copy_of_every_file(
    queue: QueueHarness, s3: tuple[dict[str, Any], Any], tmp_path: Path
) -> None:
    storage, client = s3
    alice = await queue.client("alice")
    async with one_worker(queue, tmp_path, storage) as setup:
        seen = setup.seen
        first = await seen.final(await submit(alice, MANY_OUTPUTS))
        again = await seen.final(await submit(alice, MANY_OUTPUTS))
        cached = [e["data"]["data"] for e in seen.of(again["id"], EventType.COMFY)
                  if e["data"]["type"] == "execution_cached"]  # fmt: skip
    assert first["state"] == again["state"] == JobState.SUCCEEDED
    assert sorted(cached[0]["nodes"]) == sorted(MANY_OUTPUTS)  # ComfyUI ran nothing again
    for node_id in ("2", "3", "5"):
        ones = _file_entries(first["outputs"][node_id])
        twos = _file_entries(again["outputs"][node_id])
        assert [e["filename"] for e in ones] == [e["filename"] for e in twos]
        for one, two in zip(ones, twos, strict=True):
            assert two["key"].startswith(f"users/alice/{two['type']}/{again['id']}/")
            assert two["subfolder"].startswith(again["id"])
            assert _object(client, two["key"]) == _object(client, one["key"])
    await alice.aclose()


async def test_preview_frames_are_relayed_throttled_when_asked_for(
    queue: QueueHarness, tmp_path: Path
) -> None:
    graph = txt2img("m.safetensors")
    graph["3"]["inputs"]["steps"] = 12
    alice = await queue.client("alice")
    async with one_worker(queue, tmp_path, worker={"previews": True, "preview_interval_s": 0.2},
                          previews=True, step_time_s=0.05,
                          models={"checkpoints": ["m.safetensors"]}) as setup:  # fmt: skip
        job = await setup.seen.final(await submit(alice, graph))
    assert job["state"] == JobState.SUCCEEDED
    relayed = [e["data"] for e in setup.seen.of(job["id"], EventType.COMFY)]
    previews = [m["data"] for m in relayed if m["type"] == "preview"]
    steps = [m for m in relayed if m["type"] == "progress"]
    assert len(steps) == 12 and 2 <= len(previews) < 12  # one per 0.2 s of 0.6 s, not 12
    for preview in previews:
        assert preview["format"] == "jpeg"
        with Image.open(io.BytesIO(base64.b64decode(preview["image"]))) as image:
            assert image.format == "JPEG"
    await alice.aclose()


async def test_an_idle_worker_stops_at_once_and_leaves_the_queue(
    queue: QueueHarness, tmp_path: Path
) -> None:
    """Stopping does not wait out the lease long-poll (20 s by default): a host being shut
    down gives the worker seconds, and the queue must hear it left."""
    async with start_double(tmp_path / "comfy") as comfy:
        settings = worker_settings(queue, comfy.url, dir_storage(tmp_path), lease_wait_s=20)
        worker = Worker(settings)
        task = asyncio.create_task(worker.run(handle_signals=False))
        await until(lambda: bool(worker._polls) or task.done(), what="a waiting lease poll")
        assert not task.done()
        loop = asyncio.get_running_loop()
        began = loop.time()
        worker.stop("test")
        async with asyncio.timeout(15):
            assert await task == 0
        assert loop.time() - began < 5
        admin = await queue.client("admin")
        assert (await admin.get("/api/admin/workers")).json() == []
        await admin.aclose()
