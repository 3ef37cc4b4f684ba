"""A plain ComfyUI API client (WebSocket + /prompt + /history + /view, nothing else) runs a
graph end to end as user001 against the gateway, with the queue, a worker and a ComfyUI
double behind it."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from PIL import Image

from tests.gateway_harness import PASSWORDS, play_worker, start_stack

GRAPH = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 3368652},
    },
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {
        "class_type": "SaveImage",
        "inputs": {"images": ["2", 0], "filename_prefix": "api_client"},
    },
}


async def run_as_comfyui_client(base: str, user: str, password: str) -> dict[str, Any]:
    """What a script written for ComfyUI does: open /ws with a clientId, POST /prompt, read
    messages until `executing` with node None for its prompt, GET /history/{id}, GET /view."""
    client_id = str(uuid.uuid4())
    headers = {"Authorization": aiohttp.encode_basic_auth(user, password)}
    async with aiohttp.ClientSession(headers=headers) as http:
        ws_url = base.replace("http", "ws", 1) + f"/ws?clientId={client_id}"
        async with http.ws_connect(ws_url) as ws:
            first = await ws.receive_json()
            async with http.post(
                base + "/prompt", json={"prompt": GRAPH, "client_id": client_id}
            ) as r:
                assert r.status == 200, await r.text()
                prompt_id = (await r.json())["prompt_id"]
            seen = []
            async with asyncio.timeout(30):
                while True:
                    message = await ws.receive()
                    if message.type != aiohttp.WSMsgType.TEXT:
                        continue
                    data = json.loads(message.data)
                    seen.append(data)
                    if (
                        data["type"] == "executing"
                        and data["data"]["node"] is None
                        and data["data"]["prompt_id"] == prompt_id
                    ):
                        break
        async with http.get(f"{base}/history/{prompt_id}") as r:
            history = await r.json()
        images = history[prompt_id]["outputs"]["3"]["images"]
        async with http.get(base + "/view", params=images[0]) as r:
            assert r.status == 200
            picture = await r.read()
    return {"first": first, "seen": seen, "history": history, "image": picture, "id": prompt_id}


async def test_api_client_runs_a_graph_end_to_end(
    redis_url: str, tmp_path: Path, comfy: Any
) -> None:
    async with start_stack(redis_url, tmp_path / "files") as stack, play_worker(stack, comfy):
        result = await run_as_comfyui_client(
            stack.url("user001", ""), "user001", PASSWORDS["user001"]
        )
    assert result["first"]["type"] == "status" and "sid" in result["first"]["data"]
    types = [m["type"] for m in result["seen"]]
    assert types[0] == "status" and "execution_start" in types and "execution_success" in types
    executed = [m for m in result["seen"] if m["type"] == "executed"]
    entry = executed[0]["data"]["output"]["images"][0]
    assert entry["subfolder"] == result["id"] and entry["type"] == "output" and "key" not in entry
    assert all(m["data"].get("prompt_id") in (None, result["id"]) for m in result["seen"])
    status = result["history"][result["id"]]["status"]
    assert status["status_str"] == "success" and status["completed"] is True
    with Image.open(io.BytesIO(result["image"])) as image:
        assert image.format == "PNG" and image.size == (64, 48)
