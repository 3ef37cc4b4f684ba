"""The whole path with the real worker: a plain ComfyUI API client talks to its ComfyUI at the
gateway (/user001/), the queue schedules, `services.worker` runs the job on the double and
stores the output; the client sees ComfyUI's messages, history and file."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from PIL import Image

from tests.gateway_harness import PASSWORDS, start_stack
from tests.test_gateway_api_client import run_as_comfyui_client
from tests.worker_harness import running_worker, worker_settings


async def test_a_comfyui_client_runs_a_graph_through_the_gateway_and_the_worker(
    redis_url: str, tmp_path: Path, comfy: Any
) -> None:
    files = tmp_path / "files"
    async with start_stack(redis_url, files) as stack:
        settings = worker_settings(stack.queue, comfy.url, {"dir": str(files)})
        async with running_worker(settings) as worker:
            result = await run_as_comfyui_client(
                stack.url("user001", ""), "user001", PASSWORDS["user001"]
            )
            assert worker.jobs_done == 1
    types = [m["type"] for m in result["seen"]]
    assert types[0] == "status" and "execution_start" in types
    assert types.index("execution_success") < len(types) - 1  # `executing null` closes
    executed = [m for m in result["seen"] if m["type"] == "executed"]
    entry = executed[0]["data"]["output"]["images"][0]
    assert entry["subfolder"] == result["id"] and "key" not in entry  # the gateway drops keys
    status = result["history"][result["id"]]["status"]
    assert status["status_str"] == "success" and status["completed"] is True
    with Image.open(io.BytesIO(result["image"])) as image:
        assert image.format == "PNG" and image.size == (64, 48)
