"""The recorded traces' requests replayed against `/user001/` of the gateway (queue, stand-in
worker and ComfyUI double behind it), compared with the recordings: status codes, bodies
(normalized as in tests/trace_replay.py) and each socket's message types in order.

Every trace is replayed. The real worker (`services.worker`) runs the jobs on a double set up
as tests/test_comfyui_double.py sets it up for the trace (`SETUPS` node timings,
`STEP_TIME_BEFORE`, the recorded checkpoint; the `PRIMERS` run on it first, so its cache
is the recording server's); trace 11's worker relays every preview (`WORKER_SETUPS`). The
replay syncs on every message except `status` (`_counted`: the gateway sends its own count
of this participant's jobs); messages are compared by type and node, binary frames by
type and header. Known differences from ComfyUI, allowed below:

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
- `NOT_SENT`: recorded messages the platform does not send (trace 07: an upload staged by
  content is answered from ComfyUI's cache), each with its reason;
- non-image uploads to /upload/image are refused (400); LoadImage lists only the
  participant's uploads (no `example.png`).
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
from tests.test_comfyui_double import (
    CHECKPOINT,
    CHECKPOINT_METADATA,
    PRIMERS,
    SETUPS,
    STEP_TIME_BEFORE,
    _run_prompt,
    _uploads,
)
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


def _describe(messages: list[Any], back: dict[str, str]) -> list[str]:
    """Each message's type (and node), binary frames by type and header (prompt ids mapped
    back to the trace's); `status` left out (see `_counted`)."""
    described = []
    for m in messages:
        if isinstance(m, bytes):
            described.append(json.dumps(tr.rewrite(tr.binary_frame(m), back), sort_keys=True))
        elif isinstance(m, dict) and m.get("kind") == "ws_recv":  # a recorded binary frame
            described.append(json.dumps(tr.recorded_frame(m), sort_keys=True))
        elif isinstance(m, dict) and m.get("type") != "status":
            node = (
                (m.get("data") or {}).get("node", "-") if isinstance(m.get("data"), dict) else "-"
            )
            described.append(m["type"] + (f"({node})" if node != "-" else ""))
    return described


def _counted(message: Any) -> bool:
    """The gateway's `status` frames differ in number from ComfyUI's (see the docstring): the
    replay syncs on every other message."""
    return not (isinstance(message, dict) and message.get("type") == "status")



#: Recorded messages the platform does not send (by trace and seq), and why; the replay runs
#: and syncs on the trace without them.
_STAGED_BY_CONTENT = (
    "the worker stages an upload by its content (workshop/<user>/<sha256>/<name>), so "
    "LoadImage of sub1/<name>, the same bytes as the first prompt's <name>, is the same "
    "ComfyUI input: ComfyUI answers node 1 from its cache instead of running it again"
)
NOT_SENT: dict[tuple[str, int], str] = {
    ("07_upload_image_then_loadimage", 45): _STAGED_BY_CONTENT,  # executing(1)
    ("07_upload_image_then_loadimage", 46): _STAGED_BY_CONTENT,  # progress_state
    ("07_upload_image_then_loadimage", 47): _STAGED_BY_CONTENT,  # progress_state
}


def _expected(name: str) -> dict[str, Any]:
    """The trace as the platform replays it: without the `NOT_SENT` messages."""
    trace = load_trace(name)
    events = [e for e in trace["events"] if (name, e["seq"]) not in NOT_SENT]
    return {**trace, "events": events}


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
#: Worker settings per trace: trace 11's server ran with previews on (`--preview-method`), and
#: the worker's throttle (one preview per 0.5 s) is off so every frame ComfyUI sent goes out.
WORKER_SETUPS: dict[str, dict[str, Any]] = {
    "11_sd15_previews_binary_frames": {"previews": True, "preview_interval_s": 0.0},
}
REPLAYED = trace_names()


def _models_bucket(comfy: Any) -> DirStore:
    """The double's models folder as the models bucket (`<folder>/<file>`) the gateway reads
    safetensors headers from; the recorded checkpoint gets its recorded metadata."""
    if CHECKPOINT in comfy.folders.model_files("checkpoints"):
        comfy.add_model("checkpoints", CHECKPOINT, CHECKPOINT_METADATA)
    return DirStore(comfy.folders.models_root)


@pytest.mark.parametrize("name", REPLAYED)
async def test_trace_replays_against_the_gateway(name: str, redis_url: str, tmp_path: Path) -> None:
    trace = _expected(name)
    headers = {"Authorization": aiohttp.encode_basic_auth("user001", PASSWORDS["user001"])}
    files = tmp_path / "files"
    options = DOUBLE_SETUPS.get(name, {})
    async with (
        start_double(tmp_path / "comfyui", **options) as comfy,
        start_stack(redis_url, files, models=_models_bucket(comfy)) as stack,
        running_worker(
            worker_settings(
                stack.queue, comfy.url, {"dir": str(files)}, **WORKER_SETUPS.get(name, {})
            )
        ),
        aiohttp.ClientSession(headers=headers) as http,
    ):
        for prompt in PRIMERS.get(name, []):  # the recording server's cache, on the worker's
            await _run_prompt(http, comfy, prompt)  # ComfyUI (its cache is the trace's story)

        async def before_event(event: dict[str, Any]) -> None:
            step_time = STEP_TIME_BEFORE.get((name, event["seq"]))
            if step_time is not None:
                comfy.timing.step_time_s = step_time

        async with asyncio.timeout(90):
            replayed = await tr.replay(
                trace, stack.url("user001", ""), http,
                request_for=_uploads, counted=_counted, before_event=before_event,
            )  # fmt: skip
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
            e.get("json", e) for e in trace["events"] if e["kind"] == "ws_recv" and e["ws"] == label
        ]
        assert _describe(socket.messages, back) == _describe(recorded_messages, {}), label
