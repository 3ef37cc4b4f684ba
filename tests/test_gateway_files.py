"""The gateway's file routes beyond the traces: `/view` by ComfyUI's own file names (the
newest of the participant's files with that name, never another participant's), and
`/view_metadata` from the models bucket for the pool's models only."""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path
from typing import Any

import orjson
from PIL import Image

from services.contracts import FileType, job_file_key
from services.storage import DirStore
from tests.gateway_harness import start_stack
from tests.test_comfyui_double import CHECKPOINT, CHECKPOINT_METADATA
from tests.worker_harness import running_worker, worker_settings


def _png(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), color).save(buffer, "PNG")
    return buffer.getvalue()


def _color(body: bytes) -> Any:
    with Image.open(io.BytesIO(body)) as image:
        return image.convert("RGB").getpixel((0, 0))


async def test_view_by_comfyuis_name_serves_the_newest_own_file(
    redis_url: str, tmp_path: Path
) -> None:
    files = tmp_path / "files"
    store = DirStore(files)
    name = "ComfyUI_00001_.png"  # two workers' ComfyUIs both wrote this name
    older, newer = (
        job_file_key("user001", "job-a", FileType.OUTPUT, "", name),
        job_file_key("user001", "job-b", FileType.OUTPUT, "", name),
    )
    await store.put(older, _png((255, 0, 0)))
    await store.put(newer, _png((0, 0, 255)))
    os.utime(files / older, (1_000, 1_000))
    os.utime(files / newer, (2_000, 2_000))
    theirs = job_file_key("user002", "job-c", FileType.OUTPUT, "sub", "theirs_00001_.png")
    await store.put(theirs, _png((0, 255, 0)))
    async with start_stack(redis_url, files, store) as stack, stack.client("user001") as http:
        by_comfy_name = await http.get("/user001/view", params={"filename": name, "type": "output"})
        assert by_comfy_name.status_code == 200 and _color(by_comfy_name.content) == (0, 0, 255)
        annotated = await http.get("/user001/view", params={"filename": f"{name} [output]"})
        assert _color(annotated.content) == (0, 0, 255)
        for job, color in (("job-a", (255, 0, 0)), ("job-b", (0, 0, 255))):  # history's names
            r = await http.get("/user001/view", params={"filename": name, "subfolder": job})
            assert r.status_code == 200 and _color(r.content) == color
        for params in (
            {"filename": "theirs_00001_.png", "subfolder": "sub"},  # user002's file
            {"filename": name, "subfolder": "sub"},  # no such subfolder in any job
            {"filename": name, "type": "input"},  # uploads are not looked up by job
            {"filename": name, "subfolder": "a/../../user002"},
        ):
            r = await http.get("/user001/view", params=params)
            assert r.status_code in (403, 404), (params, r.status_code)
    async with start_stack(redis_url, files, store) as stack, stack.client("user002") as http:
        r = await http.get(
            "/user002/view", params={"filename": "theirs_00001_.png", "subfolder": "sub"}
        )
        assert r.status_code == 200 and _color(r.content) == (0, 255, 0)
        assert (await http.get("/user002/view", params={"filename": name})).status_code == 404


def _safetensors(metadata: dict[str, str] | None) -> bytes:
    header = orjson.dumps({"__metadata__": metadata} if metadata is not None else {})
    return struct.pack("<Q", len(header)) + header + b"\0" * 64


async def test_view_metadata_reads_pool_models_from_the_models_bucket(
    redis_url: str, tmp_path: Path
) -> None:
    from tests.comfyui_double import start_double

    bucket = DirStore(tmp_path / "models-bucket")
    await bucket.put(f"checkpoints/{CHECKPOINT}", _safetensors(CHECKPOINT_METADATA))
    await bucket.put("checkpoints/bare.safetensors", _safetensors(None))
    await bucket.put("checkpoints/not-in-pool.safetensors", _safetensors({"a": "b"}))
    files = tmp_path / "files"
    models = {"checkpoints": [CHECKPOINT, "bare.safetensors", "missing.safetensors"]}
    async with (
        start_double(tmp_path / "comfyui", models=models) as comfy,
        start_stack(redis_url, files, models=bucket) as stack,
        running_worker(worker_settings(stack.queue, comfy.url, {"dir": str(files)})),
        stack.client("user001") as http,
    ):

        async def metadata(folder: str, filename: str) -> tuple[int, Any]:
            r = await http.get(f"/user001/view_metadata/{folder}", params={"filename": filename})
            return r.status_code, (r.json() if r.status_code == 200 else r.content)

        assert await metadata("checkpoints", CHECKPOINT) == (200, CHECKPOINT_METADATA)
        assert (
            await http.get(f"/user001/api/view_metadata/checkpoints?filename={CHECKPOINT}")
        ).json() == CHECKPOINT_METADATA
        for folder, filename in (
            ("checkpoints", "not-in-pool.safetensors"),  # the bucket has it, no worker does
            ("checkpoints", "bare.safetensors"),  # no __metadata__
            ("checkpoints", "missing.safetensors"),  # a worker lists it, the bucket lacks it
            ("checkpoints", "x.ckpt"),
            ("checkpoints", "../checkpoints/" + CHECKPOINT),
            ("nowhere", CHECKPOINT),
        ):
            assert (await metadata(folder, filename))[0] == 404, (folder, filename)
    async with start_stack(redis_url, files) as stack, stack.client("user001") as http:
        r = await http.get(f"/user001/view_metadata/checkpoints?filename={CHECKPOINT}")
        assert r.status_code == 404  # no models bucket configured
