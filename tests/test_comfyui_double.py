"""The ComfyUI test double against the recorded traces of a real ComfyUI 0.3.64.

Every trace is replayed (`tests/trace_replay.py`) against a fresh double (traces 11 and 12
share one, as they shared a server: 12 pages through 11's history), and every HTTP response
and every WebSocket message is compared with the recording: status codes, content types,
bodies key for key and type for type, messages per socket in order, binary frame headers.

Allowed differences (the only ones; `trace_replay.normalize` and `_check_http` encode them):

- values that differ between any two ComfyUI runs: timestamps, prompt `number`s (the
  recording server had run unrecorded prompts; only the sign is compared), anonymous socket
  ids, prompt ids the server chose (mapped back to the trace's before comparing), the
  `_00001_` file counters and the random `_temp_xxxxx_` prefix of PreviewImage files;
- lists ComfyUI builds from Python sets, whose order is random per process: the
  `outputs_to_execute` of queue/history entries, `executed` and `current_outputs` of
  `execution_error` / `execution_interrupted` (compared as sets);
- tracebacks (lists of strings: the double's own frames) and the tensor dumps in an
  `execution_error`'s `current_inputs` (the double has no tensors);
- machine facts: `/system_stats` (shape and versions only), `/internal/logs`,
  `/internal/folder_paths`, `/experiment/models` folders, `/internal/files/*` listings (shape);
- what belongs to the frontend package, which the double does not ship: `GET /` (a stub page,
  status and type compared) and `/extensions` (an empty list: shape compared);
- file bytes: output PNG/WEBP files are compared by status, type, format and image size, not
  bytes (no pixels are computed); uploaded files come back byte for byte.

Cache state the recording inherited from prompts it did not record is recreated by running
those prompts first (`PRIMERS`); simulated node times are set where a trace interrupts or
inspects a running prompt (`SETUPS`), and interrupts cut them short.
"""

from __future__ import annotations

import asyncio
import copy
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from tests import trace_replay as tr
from tests.comfyui_double import ComfyDouble, start_double
from tests.traces import blob, load_trace

UPLOAD = "trace_upload_9dfb42.png"
CHECKPOINT = "random-sd15.safetensors"
CHECKPOINT_METADATA = {"format": "pt", "comfy_lab": "random SD1.5-shaped weights, seed=0, fp16"}

#: The traces replayed together against one double, in recording order.
GROUPS = [
    ["01_connect_handshake"],
    ["02_success_emptyimage_save"],
    ["03_cached_rerun"],
    ["04a_validation_errors_400"],
    ["04b_validation_partial_200"],
    ["05_execution_error_runtime"],
    ["06_interrupt"],
    ["07_upload_image_then_loadimage"],
    ["08_two_prompts_queue"],
    ["09_no_client_id_broadcast"],
    ["10_sd15_txt2img_random_ckpt"],
    ["11_sd15_previews_binary_frames", "12_history_queue_admin_misc"],
]


def _prompt_of(trace: str, seq: int) -> dict:
    event = next(e for e in load_trace(trace)["events"] if e["seq"] == seq)
    return copy.deepcopy(event["request"]["json"]["prompt"])


#: Prompts the recording server had run just before, that the trace's cache state shows:
#: 04a's first accepted graph finds nodes 1 and 2 of trace 02's graph cached; 09's first
#: (client-less) prompt is answered entirely from the cache.
PRIMERS: dict[str, list[dict]] = {
    "04a_validation_errors_400": [_prompt_of("02_success_emptyimage_save", 2)],
    "09_no_client_id_broadcast": [_prompt_of("09_no_client_id_broadcast", 4)],
}

#: Double options per group, and timing changes before given events: a running node must
#: still be running when the trace's client interrupts or lists the queue.
SETUPS: dict[str, dict[str, Any]] = {
    "06_interrupt": {"node_time_s": {"ImageScale": 0.3}},
    "08_two_prompts_queue": {"node_time_s": {"ImageScale": 0.3}},
    "10_sd15_txt2img_random_ckpt": {"models": {"checkpoints": [CHECKPOINT]}},
    "11_sd15_previews_binary_frames": {"previews": True},
}
STEP_TIME_BEFORE = {("10_sd15_txt2img_random_ckpt", 156): 0.3}  # the 20-step run interrupted at 3


def _png(size: tuple[int, int], color: tuple[int, int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def _uploads(event: dict) -> dict | None:
    """Trace 07 describes its multipart uploads; build them (the recorded file is a blob)."""
    description = event["request"].get("body_desc")
    if description is None:
        return None
    recorded = blob("blobs/07_upload_image_then_loadimage_010_http.bin")
    form = aiohttp.FormData()
    fields: dict[str, str] = {}
    data = recorded
    if "DIFFERENT bytes" in description:
        data = _png((40, 30), (10, 200, 30, 255))
    elif "overwrite=true" in description:
        fields["overwrite"] = "true"
    elif "subfolder=sub1" in description:
        fields.update(subfolder="sub1", type="input")
    elif "traversal" in description:
        fields["subfolder"] = "../../.."
    elif "type=temp" in description:
        fields["type"] = "temp"
    for name, value in fields.items():
        form.add_field(name, value)
    if "without 'image'" not in description:
        form.add_field("image", data, filename=UPLOAD, content_type="image/png")
    else:
        form.add_field("overwrite", "false")
    return {"data": form}


async def _run_prompt(session: aiohttp.ClientSession, comfy: ComfyDouble, prompt: dict) -> None:
    async with session.post(
        comfy.url + "/prompt", json={"prompt": copy.deepcopy(prompt)}
    ) as response:
        assert response.status == 200, await response.text()
        prompt_id = (await response.json())["prompt_id"]
    await comfy.wait_done(prompt_id)


# -- comparisons ----------------------------------------------------------------------------

SHAPE_ONLY = ("/system_stats", "/extensions", "/internal/", "/experiment/models")


def _check_http(exchange: tr.Exchange, back: dict[str, str]) -> None:
    event = exchange.event
    where = f"event {event['seq']} {event['request']['method']} {event['request']['path']}"
    recorded = event["response"]
    path = event["request"]["path"].removeprefix("/api").split("?")[0]
    assert exchange.status == recorded["status"], (where, exchange.body)
    expected_type = recorded["headers"].get("Content-Type")
    assert exchange.headers.get("Content-Type") == expected_type, where
    if "Content-Disposition" in recorded["headers"]:
        assert tr.normalize(exchange.headers.get("Content-Disposition")) == tr.normalize(
            recorded["headers"]["Content-Disposition"]
        ), where
    if path == "/":
        return
    if "json" in recorded:
        actual = tr.rewrite(exchange.body, back)
        if path.startswith(SHAPE_ONLY):
            empty_list = actual == [] and isinstance(recorded["json"], list)
            assert tr.shape(actual) == tr.shape(recorded["json"]) or empty_list, where
            if path == "/system_stats":
                for key in (
                    "comfyui_version",
                    "required_frontend_version",
                    "os",
                    "embedded_python",
                ):
                    assert actual["system"][key] == recorded["json"]["system"][key], (where, key)
            if path == "/experiment/models":
                assert [m["name"] for m in actual] == [m["name"] for m in recorded["json"]], where
            return
        assert tr.normalize(actual) == tr.normalize(recorded["json"]), where
    elif "binary" in recorded:
        binary = recorded["binary"]
        body = exchange.body
        assert isinstance(body, bytes), where
        with Image.open(io.BytesIO(body)) as image:
            assert (
                image.format == {"JPEG": "JPEG", "PNG": "PNG", "WEBP": "WEBP"}[binary["magic"]]
            ), where
            if "png_size" in binary:
                assert list(image.size) == binary["png_size"], where
        if "type=input" in event["request"]["path"]:
            assert body == blob(binary["blob_file"]), where
    elif "text" in recorded:
        assert exchange.body == recorded["text"], where
    else:
        assert exchange.body in (b"", ""), where


#: Traces whose client sent requests while a prompt ran: where a `status` message (a queue
#: change caused by such a request) falls among the running prompt's messages is timing; the
#: status messages and the other messages are each compared in order.
CONCURRENT = {"08_two_prompts_queue"}


def _is_status(message: Any) -> bool:
    return isinstance(message, dict) and message.get("type") == "status"


def _check_socket(trace: dict, replayed: tr.Replayed, label: str) -> None:
    recorded = [e for e in trace["events"] if e["kind"] == "ws_recv" and e["ws"] == label]
    actual = replayed.sockets[label].messages
    if trace["name"] in CONCURRENT:
        by_kind = sorted(
            range(len(recorded)), key=lambda i: not _is_status(recorded[i].get("json"))
        )
        recorded = [recorded[i] for i in by_kind]
        actual = [m for m in actual if _is_status(m)] + [m for m in actual if not _is_status(m)]
    back = replayed.back()

    def describe(messages: list[Any]) -> list[str]:
        return [
            m["type"] + (f"({m['data'].get('node')})" if "node" in m["data"] else "")
            if isinstance(m, dict)
            else "<binary>"
            for m in messages
        ]

    assert describe(actual) == describe([e.get("json", b"") or b"" for e in recorded]), label
    for event, message in zip(recorded, actual, strict=True):
        where = f"{label} event {event['seq']}"
        if event["frame"] == "binary":
            assert tr.rewrite(tr.binary_frame(message), back) == tr.recorded_frame(event), where
        else:
            assert tr.normalize(tr.rewrite(message, back)) == tr.normalize(event["json"]), where


# -- the replay -------------------------------------------------------------------------------


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: "+".join(n.split("_")[0] for n in g))
async def test_replays_trace(group: list[str], tmp_path: Path, http: aiohttp.ClientSession) -> None:
    options = dict(SETUPS.get(group[0], {}))
    if group[0].startswith("11"):
        options["models"] = {"checkpoints": [CHECKPOINT]}
    async with start_double(tmp_path, **options) as comfy:
        if CHECKPOINT in options.get("models", {}).get("checkpoints", []):
            comfy.add_model("checkpoints", CHECKPOINT, CHECKPOINT_METADATA)
        ids: dict[str, str] = {}
        for name in group:
            trace = load_trace(name)
            for prompt in PRIMERS.get(name, []):
                await _run_prompt(http, comfy, prompt)

            async def before_event(event: dict, name: str = name) -> None:
                step_time = STEP_TIME_BEFORE.get((name, event["seq"]))
                if step_time is not None:
                    comfy.timing.step_time_s = step_time

            async with asyncio.timeout(60):
                replayed = await tr.replay(
                    trace, comfy.url, http, request_for=_uploads, before_event=before_event, ids=ids
                )
            back = replayed.back()
            for exchange in replayed.http:
                _check_http(exchange, back)
            for label in replayed.sockets:
                _check_socket(trace, replayed, label)
