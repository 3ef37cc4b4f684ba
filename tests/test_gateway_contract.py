"""The recorded traces' requests replayed against `/user001/` of the gateway (queue, stand-in
worker and ComfyUI double behind it), compared with the recordings: status codes, bodies
(normalized as in tests/trace_replay.py) and each socket's message types in order.

Replayed here so far: 01 (handshake, idle GETs, same-clientId reconnect). Traces 04a/04b/09
do not replay yet: the replayer waits for the recorded number of messages per socket, and the
gateway's `status` count per job differs in timing (see below); they need a replay hook that
does not count `status` (open item). Known differences from ComfyUI, allowed below:

- bad JSON or a prompt that is not an object: 400 with ComfyUI's error shape (ComfyUI: 500);
- `/system_stats`: the pool's (shape compared), `/extensions`: the frontend package's list
  plus the workshop extension, `GET /`: the real frontend page;
- `status` messages: the count of this participant's jobs, sent on queued, taken and ended
  (ComfyUI: the server's whole queue, on each queue change): compared by type only;
- prompt numbers are the shared queue's sequence (only the sign is compared, as between two
  ComfyUI runs); output files live in their job's subfolder (`<prompt id>[/sub]`);
- a partially valid prompt is stored with only the nodes its valid outputs need, so its
  `/queue` and `/history` entries list fewer nodes;
- `/view_metadata`, `/experiment/models` and `/internal/*` reveal no server paths, logs or
  model headers (empty answers); `/internal/files/*` lists the participant's own files;
- uploads of type temp/output answer `subfolder: "_uploads[/sub]"`; non-image uploads to
  /upload/image are refused (400); LoadImage lists only the participant's uploads (no
  `example.png`).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests import trace_replay as tr
from tests.gateway_harness import PASSWORDS, play_worker, start_stack
from tests.traces import load_trace

pytestmark = pytest.mark.timeout(120)

#: (trace, seq) whose recorded status differs, and ours.
STATUS_DIFFERENCES = {
    ("04a_validation_errors_400", 82): 400,  # malformed JSON: ComfyUI 500
    ("04a_validation_errors_400", 84): 400,  # prompt is a list: ComfyUI 500
    ("04a_validation_errors_400", 86): 400,  # node is not an object: ComfyUI 500
}
SHAPE_ONLY = ("/system_stats", "/extensions", "/internal/", "/experiment/models", "/object_info")


def _describe(messages: list[Any]) -> list[str]:
    return [
        m["type"] + (f"({m['data'].get('node')})" if "node" in (m.get("data") or {}) else "")
        for m in messages
        if isinstance(m, dict) and m.get("type") != "status"
    ]


@pytest.mark.parametrize(
    "name",
    ["01_connect_handshake"],
)  # fmt: skip
async def test_trace_replays_against_the_gateway(
    name: str, redis_url: str, tmp_path: Path, comfy: Any
) -> None:
    trace = load_trace(name)
    headers = {"Authorization": aiohttp.encode_basic_auth("user001", PASSWORDS["user001"])}
    async with (
        start_stack(redis_url, tmp_path / "files") as stack,
        play_worker(stack, comfy),
        aiohttp.ClientSession(headers=headers) as http,
    ):
        async with asyncio.timeout(90):
            replayed = await tr.replay(trace, stack.url("user001", ""), http)
    back = replayed.back()
    for exchange in replayed.http:
        event = exchange.event
        where = (
            f"{name} event {event['seq']} {event['request']['method']} {event['request']['path']}"
        )
        expected = STATUS_DIFFERENCES.get((name, event["seq"]), event["response"]["status"])
        assert exchange.status == expected, (where, exchange.body)
        path = event["request"]["path"].removeprefix("/api").split("?")[0]
        recorded = event["response"].get("json")
        if recorded is None or path == "/" or (name, event["seq"]) in STATUS_DIFFERENCES:
            continue
        actual = tr.rewrite(exchange.body, back)
        if path.startswith(SHAPE_ONLY) or path.startswith("/history") or path == "/queue":
            assert type(actual) is type(recorded), where
            continue
        if path == "/prompt" and isinstance(recorded, dict) and "prompt_id" in recorded:
            assert set(actual) == set(recorded), where
            assert tr.normalize(actual["node_errors"]) == tr.normalize(recorded["node_errors"]), (
                where
            )
            continue
        assert tr.normalize(actual) == tr.normalize(recorded), (where, json.dumps(actual)[:300])
    for label, socket in replayed.sockets.items():
        recorded_messages = [
            e.get("json") for e in trace["events"] if e["kind"] == "ws_recv" and e["ws"] == label
        ]
        assert _describe(socket.messages) == _describe(recorded_messages), label
