"""The recorded traces' requests replayed against `/user001/` of the gateway (queue, stand-in
worker and ComfyUI double behind it), compared with the recordings: status codes, bodies
(normalized as in tests/trace_replay.py) and each socket's message types in order.

The real worker (`services.worker`) runs each job on a fresh double (with the double's
`SETUPS` of tests/test_comfyui_double.py, so node timings match the trace). The replay syncs
on every message except `status` (`_counted`: the gateway sends its own count of this
participant's jobs). Replayed: every trace not in `NOT_YET` (01, 03, 04b, 05, 06 today);
`NOT_YET` names each remaining trace's first difference. Known differences from ComfyUI,
allowed below:

- bad JSON or a prompt that is not an object: 400 with ComfyUI's error shape (ComfyUI: 500);
- `/system_stats`: the pool's (shape compared), `/extensions`: the frontend package's list
  plus the workshop extension, `GET /`: the real frontend page;
- `status` messages: the count of this participant's jobs, sent on queued, taken and ended
  (ComfyUI: the server's whole queue, on each queue change): compared by type only;
- prompt numbers are the shared queue's sequence (only the sign is compared, as between two
  ComfyUI runs); histories and `executed` name output files by their job's subfolder
  (`<prompt id>[/sub]`), and `/view` serves ComfyUI's own names too (the newest such file);
- a partially valid prompt is stored with only the nodes its valid outputs need, so its
  `/queue` and `/history` entries list fewer nodes;
- `/experiment/models` and `/internal/*` reveal no server paths or logs (empty answers);
  `/internal/files/*` lists the participant's own files; `/view_metadata` reads a pool
  model's header from the models bucket (here: the double's models folder);
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

from services.storage import DirStore
from tests import trace_replay as tr
from tests.comfyui_double import start_double
from tests.gateway_harness import PASSWORDS, start_stack
from tests.test_comfyui_double import CHECKPOINT, CHECKPOINT_METADATA, SETUPS, _uploads
from tests.traces import load_trace, trace_names
from tests.worker_harness import running_worker, worker_settings

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


def _counted(message: Any) -> bool:
    """The gateway's `status` frames differ in number from ComfyUI's (see the docstring): the
    replay syncs on every other message."""
    return not (isinstance(message, dict) and message.get("type") == "status")


#: Traces that replay clean today; the others are listed with their first difference in
#: `NOT_YET` (open work: each is either an allowed difference to encode here or a gateway fix).
NOT_YET = {
    "04a_validation_errors_400": "the primer prompt the recording's cache had (executing order)",
    "07_upload_image_then_loadimage": "the sync waits for more messages than the trace had",
    "08_two_prompts_queue": "where a concurrent prompt's messages fall (timing)",
    "09_no_client_id_broadcast": "client-less prompts: ComfyUI broadcasts only status and "
    "progress_state; the gateway relays the job's messages to the participant's sockets",
    "10_sd15_txt2img_random_ckpt": "needs the checkpoint in the double and step timing",
    "11_sd15_previews_binary_frames": "previews: the worker relays none to a legacy socket",
}

#: The double's setup per trace: the double's own (node timings), and the recorded checkpoint
#: where the trace's graphs or model routes name it (the double's 11 and 12 share one server).
DOUBLE_SETUPS: dict[str, dict[str, Any]] = {
    **SETUPS,
    "11_sd15_previews_binary_frames": {
        **SETUPS["11_sd15_previews_binary_frames"],
        "models": {"checkpoints": [CHECKPOINT]},
    },
    "12_history_queue_admin_misc": {"models": {"checkpoints": [CHECKPOINT]}},
}
REPLAYED = [name for name in trace_names() if name not in NOT_YET]


def _models_bucket(comfy: Any) -> DirStore:
    """The double's models folder as the models bucket (`<folder>/<file>`) the gateway reads
    safetensors headers from; the recorded checkpoint gets its recorded metadata."""
    if CHECKPOINT in comfy.folders.model_files("checkpoints"):
        comfy.add_model("checkpoints", CHECKPOINT, CHECKPOINT_METADATA)
    return DirStore(comfy.folders.models_root)


@pytest.mark.parametrize("name", REPLAYED)
async def test_trace_replays_against_the_gateway(name: str, redis_url: str, tmp_path: Path) -> None:
    trace = load_trace(name)
    headers = {"Authorization": aiohttp.encode_basic_auth("user001", PASSWORDS["user001"])}
    files = tmp_path / "files"
    options = DOUBLE_SETUPS.get(name, {})
    async with (
        start_double(tmp_path / "comfyui", **options) as comfy,
        start_stack(redis_url, files, models=_models_bucket(comfy)) as stack,
        running_worker(worker_settings(stack.queue, comfy.url, {"dir": str(files)})),
        aiohttp.ClientSession(headers=headers) as http,
    ):
        async with asyncio.timeout(90):
            replayed = await tr.replay(
                trace, stack.url("user001", ""), http, request_for=_uploads, counted=_counted
            )
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
