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
import contextlib
import copy
import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from services.local_redis import free_port
from tests import trace_replay as tr
from tests.comfyui_double import ComfyDouble, start_double
from tests.traces import REPO_ROOT, blob, load_trace

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


# -- the control API ------------------------------------------------------------------------

GRAPH = _prompt_of(
    "02_success_emptyimage_save", 2
)  # EmptyImage -> ImageScale -> ImageInvert -> SaveImage, + PreviewImage


async def _submit(
    http: aiohttp.ClientSession,
    comfy: ComfyDouble,
    prompt: dict,
    client_id: str | None = None,
    **extra: Any,
) -> str:
    body: dict[str, Any] = {"prompt": copy.deepcopy(prompt), **extra}
    if client_id is not None:
        body["client_id"] = client_id
    async with http.post(comfy.url + "/prompt", json=body) as response:
        assert response.status == 200, await response.text()
        return (await response.json())["prompt_id"]


async def _until(ws: aiohttp.ClientWebSocketResponse, predicate: Any) -> list[dict]:
    """Messages up to and including the first one `predicate` accepts."""
    seen = []
    async with asyncio.timeout(30):
        while True:
            message = await ws.receive_json()
            seen.append(message)
            if predicate(message):
                return seen


def _executing(node: str | None) -> Any:
    return lambda m: m["type"] == "executing" and m["data"]["node"] == node


async def test_kill_mid_job_then_restart_on_the_same_port(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with start_double(tmp_path, node_time_s={"ImageScale": 60}) as comfy:
        port = comfy.port
        ws = await http.ws_connect(comfy.ws_url + "?clientId=w")
        await _submit(http, comfy, GRAPH, "w")
        await _until(ws, _executing("2"))  # node 5 has written its temp preview by now
        assert comfy.files["temp"]

        async def stalled_body():  # an upload still in flight when the server dies
            yield b"--x\r\n"
            await asyncio.Event().wait()

        upload = asyncio.create_task(
            http.post(
                comfy.url + "/upload/image",
                data=stalled_body(),
                headers={"Content-Type": "multipart/form-data; boundary=x"},
            )
        )
        server = comfy.server
        async with asyncio.timeout(10), server.request_started:
            await server.request_started.wait_for(lambda: server.requests_in_flight)
        await comfy.kill()
        async with asyncio.timeout(10):
            assert (await ws.receive()).type in (
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
                aiohttp.WSMsgType.CLOSING,
            )
            with pytest.raises(aiohttp.ClientError):
                await upload
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(comfy.url + "/system_stats")

        comfy.timing.node_time_s.clear()
        await comfy.restart()
        assert comfy.port == port
        async with http.get(comfy.url + "/queue") as response:
            assert await response.json() == {"queue_running": [], "queue_pending": []}
        async with http.get(comfy.url + "/history") as response:
            assert await response.json() == {}
        assert comfy.files["temp"] == [] and comfy.stats().prompts_run == 0
        prompt_id = await _submit(http, comfy, GRAPH)
        assert (await comfy.wait_done(prompt_id))["status"]["status_str"] == "success"


async def test_quiet_websocket_stays_open_while_history_goes_on(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with start_double(tmp_path) as comfy:
        ws = await http.ws_connect(comfy.ws_url + "?clientId=q")
        assert (await ws.receive_json())["type"] == "status"
        comfy.quiet_ws()
        quiet_id = await _submit(http, comfy, GRAPH, "q")
        assert (await comfy.wait_done(quiet_id))["status"]["completed"] is True
        comfy.loud_ws()
        graph = copy.deepcopy(GRAPH)
        graph["1"]["inputs"]["color"] = 1
        loud_id = await _submit(http, comfy, graph, "q")
        messages = await _until(ws, _executing(None))
        assert not ws.closed
        # Nothing of the quiet prompt ever arrived: the first message is the next one's status.
        assert messages[0] == {
            "type": "status",
            "data": {"status": {"exec_info": {"queue_remaining": 1}}},
        }
        assert {m["data"].get("prompt_id") for m in messages if m["type"] != "status"} == {loud_id}


async def test_fail_next_by_class_then_by_node_id(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with start_double(tmp_path) as comfy:
        ws = await http.ws_connect(comfy.ws_url + "?clientId=f")
        comfy.fail_next("ImageInvert", "RuntimeError", "boom")
        first = await _submit(http, comfy, GRAPH, "f")
        error = (await _until(ws, lambda m: m["type"] == "execution_error"))[-1]["data"]
        assert (
            error["node_id"],
            error["node_type"],
            error["exception_type"],
            error["exception_message"],
        ) == ("3", "ImageInvert", "RuntimeError", "boom\n")
        assert set(error["executed"]) == {"1", "2", "5"}
        entry = await comfy.wait_done(first)
        assert entry["status"]["status_str"] == "error" and list(entry["outputs"]) == [
            "5"
        ]  # saved before

        comfy.fail_next("4", "torch.OutOfMemoryError", "CUDA out of memory")
        second = copy.deepcopy(GRAPH)
        second["4"]["inputs"]["filename_prefix"] = "other"
        await _submit(http, comfy, second, "f")
        error = (await _until(ws, lambda m: m["type"] == "execution_error"))[-1]["data"]
        assert error["node_id"] == "4" and error["exception_type"] == "torch.OutOfMemoryError"
        assert error["exception_message"].startswith(
            "CUDA out of memory\nThis error means you ran out of memory"
        )

        third = await _submit(http, comfy, second, "f")
        assert (await comfy.wait_done(third))["status"]["status_str"] == "success"
        assert comfy.stats().prompts_failed == 2 and comfy.stats().prompts_run == 3


async def test_job_time_and_utilisation_stats(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with start_double(tmp_path, job_time_s=0.2) as comfy:
        ids = []
        for color in (1, 2):
            graph = copy.deepcopy(GRAPH)
            graph["1"]["inputs"]["color"] = color
            ids.append(await _submit(http, comfy, graph))
        for prompt_id in ids:
            messages = dict((await comfy.wait_done(prompt_id))["status"]["messages"])
            assert (
                messages["execution_success"]["timestamp"]
                - messages["execution_start"]["timestamp"]
                >= 190
            )
        stats = comfy.stats()
        assert stats.prompts_run == 2 and 0.4 <= stats.busy_s <= stats.wall_s


async def test_non_image_outputs_are_real_files(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    graph = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 32, "height": 24, "batch_size": 2, "color": 255},
        },
        "2": {
            "class_type": "SaveAnimatedWEBP",
            "inputs": {
                "images": ["1", 0],
                "filename_prefix": "anim",
                "fps": 6.0,
                "lossless": True,
                "quality": 80,
                "method": "default",
            },
        },
        "3": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1},
        },
        "4": {
            "class_type": "SaveLatent",
            "inputs": {"samples": ["3", 0], "filename_prefix": "latents/lat"},
        },
        "5": {"class_type": "PreviewAny", "inputs": {"source": "a text output"}},
    }
    async with start_double(tmp_path) as comfy:
        entry = await comfy.wait_done(await _submit(http, comfy, graph))
        outputs = entry["outputs"]
        assert outputs["2"] == {
            "images": [{"filename": "anim_00001_.webp", "subfolder": "", "type": "output"}],
            "animated": [True],
        }
        assert outputs["4"] == {
            "latents": [{"filename": "lat_00001_.latent", "subfolder": "latents", "type": "output"}]
        }
        assert outputs["5"] == {"text": ["a text output"]}
        async with http.get(comfy.url + "/view?filename=anim_00001_.webp&type=output") as response:
            assert response.content_type == "image/webp"
            with Image.open(io.BytesIO(await response.read())) as image:
                assert (image.size, image.n_frames) == ((32, 24), 2)
        async with http.get(
            comfy.url + "/view?filename=lat_00001_.latent&subfolder=latents"
        ) as response:
            assert response.content_type == "application/octet-stream"
            raw = await response.read()
            header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
            assert header["latent_tensor"]["shape"] == [1, 4, 8, 8]
        assert "latents/lat_00001_.latent" in comfy.files["output"]


async def test_reconnect_with_the_same_client_id_picks_up_the_running_node(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with start_double(tmp_path, node_time_s={"ImageScale": 60}) as comfy:
        old = await http.ws_connect(comfy.ws_url + "?clientId=r")
        prompt_id = await _submit(http, comfy, GRAPH, "r")
        await _until(old, _executing("2"))
        new = await http.ws_connect(comfy.ws_url + "?clientId=r")
        assert (await new.receive_json())["data"]["sid"] == "r"
        assert await new.receive_json() == {"type": "executing", "data": {"node": "2"}}
        comfy.interrupt()
        messages = await _until(new, _executing(None))
        assert [m["type"] for m in messages if m["type"] != "status"][-2:] == [
            "execution_interrupted",
            "executing",
        ]
        assert (await comfy.wait_done(prompt_id))["status"]["status_str"] == "error"
        await old.close()


# -- as a process ---------------------------------------------------------------------------

FAKE_CHECKOUT = REPO_ROOT / "tests" / "comfyui_double" / "fake_checkout"


@contextlib.asynccontextmanager
async def _started_process(
    port: int, tmp_path: Path, **env: str
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """The fake checkout's main.py, ready; yields it and what it printed until then."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "main.py", "--listen", "127.0.0.1", "--port", str(port),
        "--disable-auto-launch", "--cuda-device", "1", "--use-sage-attention",
        cwd=FAKE_CHECKOUT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "COMFY_DOUBLE_ROOT": str(tmp_path), **env},
    )  # fmt: skip
    try:
        printed = []
        async with asyncio.timeout(30):  # readiness: ComfyUI prints its URL once it listens
            while b"To see the GUI go to" not in (line := await process.stdout.readline()):
                assert line, "the double exited before listening"
                printed.append(line.decode())
        yield process, "".join(printed)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_process_mode_from_a_fake_checkout(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    port = free_port()
    gpu = {
        "COMFY_DOUBLE_GPU": "NVIDIA H100 80GB HBM3:85017853952",
        "COMFY_DOUBLE_JOB_TIME_S": "0.05",
    }
    async with _started_process(port, tmp_path, **gpu) as (process, printed):
        assert (
            "ignoring ComfyUI arguments the double does not model: --use-sage-attention" in printed
        )
        url = f"http://127.0.0.1:{port}"
        async with http.get(url + "/system_stats") as response:
            stats = await response.json()
        assert stats["system"]["argv"][:3] == ["main.py", "--listen", "127.0.0.1"]
        assert stats["devices"][0]["index"] == 1 and "H100" in stats["devices"][0]["name"]
        ws = await http.ws_connect(f"ws://127.0.0.1:{port}/ws?clientId=p")
        async with http.post(url + "/prompt", json={"prompt": GRAPH, "client_id": "p"}) as response:
            assert response.status == 200
        await _until(ws, _executing(None))
        async with http.get(url + "/__double__/stats") as response:
            assert (await response.json())["prompts_run"] == 1
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            await process.stdout.read()
            assert await process.wait() == 0


async def test_process_crashes_mid_prompt_on_request(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    port = free_port()
    async with _started_process(port, tmp_path, COMFY_DOUBLE_CRASH_ON_PROMPT="1") as (process, _):
        ws = await http.ws_connect(f"ws://127.0.0.1:{port}/ws?clientId=c")
        body = {"prompt": GRAPH, "client_id": "c"}
        async with http.post(f"http://127.0.0.1:{port}/prompt", json=body) as response:
            assert response.status == 200
        async with asyncio.timeout(10):
            assert await process.wait() == 1
            while (await ws.receive()).type not in (
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            ):
                pass


async def test_free_memory_empties_the_cache_and_other_routes(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with start_double(tmp_path) as comfy:
        first = await comfy.wait_done(await _submit(http, comfy, GRAPH, number=7))
        assert first["prompt"][0] == 7.0 and isinstance(first["prompt"][0], float)  # float(number)
        cached = dict(
            (await comfy.wait_done(await _submit(http, comfy, GRAPH)))["status"]["messages"]
        )
        assert cached["execution_cached"]["nodes"] == ["1", "2", "3", "4", "5"]
        async with http.post(comfy.url + "/api/free", json={"free_memory": True}) as response:
            assert response.status == 200
        fresh = dict(
            (await comfy.wait_done(await _submit(http, comfy, GRAPH)))["status"]["messages"]
        )
        assert fresh["execution_cached"]["nodes"] == []

        # /upload/mask: the original's pixels with the mask's alpha, saved as a new input file.
        form = aiohttp.FormData()
        form.add_field(
            "image", _png((64, 64), (0, 0, 0, 77)), filename="mask.png", content_type="image/png"
        )
        form.add_field("original_ref", json.dumps({"filename": "example.png", "type": "input"}))
        async with http.post(comfy.url + "/upload/mask", data=form) as response:
            assert await response.json() == {"name": "mask.png", "subfolder": "", "type": "input"}
        with Image.open(tmp_path / "input" / "mask.png") as masked:
            assert (
                masked.mode == "RGBA"
                and masked.size == (64, 64)
                and masked.getpixel((0, 0))[3] == 77
            )

        # ComfyUI refuses a loopback request whose Origin is another site.
        headers = {"Origin": "http://evil.example"}
        async with http.post(
            comfy.url + "/prompt", json={"prompt": GRAPH}, headers=headers
        ) as response:
            assert response.status == 403


async def test_process_crashes_after_a_set_time(tmp_path: Path) -> None:
    async with _started_process(free_port(), tmp_path, COMFY_DOUBLE_CRASH_AFTER_S="0.2") as (
        process,
        _,
    ):
        async with asyncio.timeout(10):
            assert await process.wait() == 1


async def test_the_comfy_fixture_is_a_running_double(
    comfy: ComfyDouble, http: aiohttp.ClientSession
) -> None:
    async with http.get(comfy.url + "/api/features") as response:
        assert await response.json() == {
            "supports_preview_metadata": True,
            "max_upload_size": 104857600,
        }
