"""The gateway's `/ws` beyond the traces, with the real worker on a ComfyUI double: a tab that
reconnects with the same clientId while its prompt runs picks the job up (ComfyUI's
`executing` with the current node at once, the rest of the job's messages on the new
socket, none on the old one, which the new one replaced)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.gateway_harness import PASSWORDS, start_stack
from tests.test_gateway_api_client import GRAPH
from tests.worker_harness import running_worker, worker_settings

pytestmark = pytest.mark.timeout(120)


async def _until(ws: aiohttp.ClientWebSocketResponse, predicate: Any) -> list[dict[str, Any]]:
    """Text messages up to and including the first one `predicate` accepts."""
    seen = []
    async with asyncio.timeout(30):
        while True:
            message = await ws.receive()
            if message.type != aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"socket ended: {message.type}")
            seen.append(json.loads(message.data))
            if predicate(seen[-1]):
                return seen


def _executing(node: str | None) -> Any:
    return lambda m: m["type"] == "executing" and m["data"]["node"] == node


async def test_a_reconnect_with_the_same_client_id_picks_up_the_running_job(
    redis_url: str, tmp_path: Path, comfy: Any
) -> None:
    comfy.timing.node_time_s["ImageInvert"] = 60  # node 2 runs until interrupted
    files = tmp_path / "files"
    headers = {"Authorization": aiohttp.encode_basic_auth("user001", PASSWORDS["user001"])}
    async with (
        start_stack(redis_url, files) as stack,
        running_worker(worker_settings(stack.queue, comfy.url, {"dir": str(files)})),
        aiohttp.ClientSession(headers=headers) as http,
    ):
        base = stack.url("user001", "")
        ws_url = base.replace("http", "ws", 1) + "/ws?clientId=tab"
        old = await http.ws_connect(ws_url)
        async with http.post(base + "/prompt", json={"prompt": GRAPH, "client_id": "tab"}) as r:
            assert r.status == 200, await r.text()
            prompt_id = (await r.json())["prompt_id"]
        await _until(old, _executing("2"))

        new = await http.ws_connect(ws_url)
        first = await new.receive_json()
        assert first["type"] == "status" and first["data"]["sid"] == "tab"
        assert first["data"]["status"]["exec_info"]["queue_remaining"] == 1
        assert await new.receive_json() == {"type": "executing", "data": {"node": "2"}}

        async with http.post(base + "/interrupt", json={"prompt_id": prompt_id}) as r:
            assert r.status == 200
        rest = await _until(new, _executing(None))
        types = [m["type"] for m in rest if m["type"] != "status"]
        assert types[-2:] == ["execution_interrupted", "executing"], types
        assert rest[-1]["data"]["prompt_id"] == prompt_id
        # The old tab is replaced, as in ComfyUI (sockets by sid): nothing more reaches it.
        # Whatever was routed to it was written before the new tab's closing frame, so a
        # short read finds it if there is any.
        with pytest.raises(TimeoutError):
            await old.receive(timeout=0.3)
        async with http.get(f"{base}/history/{prompt_id}") as r:
            status = (await r.json())[prompt_id]["status"]
        assert status["status_str"] == "error" and not status["completed"]
        await old.close()
        await new.close()
