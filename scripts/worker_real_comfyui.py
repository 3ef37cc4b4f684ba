"""By hand: the traces' model-free graphs through the queue and the worker, against a real
ComfyUI 0.3.64 and against the test double, side by side (issue 9, acceptance item 3).

    ../shared/comfyui/real-comfyui.sh /work/.mirror/Comfy-Org+ComfyUI/repo 8190
    uv run python scripts/worker_real_comfyui.py --real http://127.0.0.1:8190
    kill "$(cat /tmp/comfyui-real/pid)"

For each case the same graph goes through a private Redis, the queue service and one worker,
once attached to the real ComfyUI and once to the double; the script prints what each run
ended with (state, error, outputs, the relayed message types, stored files) and every
difference between the two. Exit status 0 even when they differ: read the report.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import io
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.contracts import EventType, input_key  # noqa: E402
from services.local_redis import LocalRedis  # noqa: E402
from tests.comfyui_double import start_double  # noqa: E402
from tests.queue_harness import queue_settings, start_queue  # noqa: E402
from tests.traces import load_trace  # noqa: E402
from tests.worker_harness import (  # noqa: E402
    job_events,
    running_worker,
    submit,
    worker_settings,
)


def _prompts(trace: str) -> list[tuple[str, dict[str, Any]]]:
    """(case note, prompt) of every POST /prompt in a trace."""
    note, out = "", []
    for event in load_trace(trace)["events"]:
        if event["kind"] == "note":
            note = event["text"].strip("- ")
        request = event.get("request") or {}
        body = request.get("json")
        if (
            event["kind"] == "http"
            and request.get("method") == "POST"
            and request.get("path") == "/prompt"
            and isinstance(body, dict)
            and isinstance(body.get("prompt"), dict)
            and all(isinstance(n, dict) for n in body["prompt"].values())
        ):
            out.append((note or trace, body["prompt"]))
    return out


def cases() -> list[tuple[str, dict[str, Any], str]]:
    """(name, prompt, how to run it: plain | cancel_running | cancel_prefetched)."""
    found: list[tuple[str, dict[str, Any], str]] = []
    (success,) = _prompts("02_success_emptyimage_save")[:1]
    found.append(("02 success EmptyImage->ImageScale->ImageInvert->SaveImage+PreviewImage",
                  success[1], "plain"))  # fmt: skip
    found.append(("03 cached rerun of 02", success[1], "plain"))
    for note, prompt in _prompts("04a_validation_errors_400"):
        found.append((f"04a {note}", prompt, "plain"))
    for note, prompt in _prompts("04b_validation_partial_200"):
        found.append((f"04b {note}", prompt, "plain"))
    for i, (note, prompt) in enumerate(_prompts("05_execution_error_runtime")):
        found.append((f"05 #{i} {note}", prompt, "plain"))
    slow = _prompts("06_interrupt")[0][1]
    found.append(("06 cancel while running (slow lanczos chain)", slow, "cancel_running"))
    found.append(("06 cancel while prefetched", slow, "cancel_prefetched"))
    for note, prompt in _prompts("07_upload_image_then_loadimage")[:1]:
        found.append((f"07 upload -> LoadImage {note}", prompt, "upload"))
    missing = {"1": {"class_type": "LoadImage", "inputs": {"image": "not_uploaded.png"}},
               "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0],
                                                           "filename_prefix": "m"}}}  # fmt: skip
    found.append(("07 LoadImage of a file the participant never uploaded", missing, "plain"))
    return found


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 12), (200, 30, 60)).save(buffer, "PNG")
    return buffer.getvalue()


def _without(value: Any, keys: tuple[str, ...]) -> Any:
    """`value` with those keys dropped at every depth (tracebacks, timestamps, ids)."""
    if isinstance(value, dict):
        return {k: _without(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [_without(v, keys) for v in value]
    return value


def _file(entry: dict[str, Any], job_id: str) -> dict[str, Any]:
    """A stored file entry without what differs by run: the job id, random temp names."""
    name = re.sub(r"^ComfyUI_temp_[a-z]{5}_", "ComfyUI_temp_*_", entry["filename"])
    sub = entry["subfolder"].removeprefix(job_id).lstrip("/")
    prefix = f"users/alice/{entry['type']}/{job_id}/"
    return {"filename": name, "subfolder": f"<job>/{sub}".rstrip("/"), "type": entry["type"],
            "stored": entry.get("key", "").startswith(prefix)}  # fmt: skip


def _summary(job: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, Any]:
    comfy = [e["data"] for e in events if e["type"] == EventType.COMFY]
    error = _without(job.get("error"), ("traceback", "timestamp", "prompt_id",
                                         "current_inputs", "current_outputs"))  # fmt: skip
    if isinstance(error, dict) and "exception_message" in error:
        error["exception_message"] = str(error["exception_message"]).split("\n")[0]
    outputs = {
        node: {key: [_file(e, job["id"]) if isinstance(e, dict) else e for e in values]
               if isinstance(values, list) else values for key, values in output.items()}
        for node, output in (job.get("outputs") or {}).items()
    }  # fmt: skip
    return {
        "state": job["state"],
        "attempt": job["attempt"],
        "error": error,
        "outputs": outputs,
        "messages": [m["type"] for m in comfy],
        "gpu_ms_reported": job.get("gpu_ms") is not None,
        "history_status": (job.get("history") or {}).get("status", {}).get("status_str"),
    }


async def run_all(comfy_url: str, redis: LocalRedis, work: Path, label: str) -> dict[str, Any]:
    settings = queue_settings(redis.url)
    results: dict[str, Any] = {}
    async with start_queue(settings) as queue, job_events(queue) as seen:
        alice = await queue.client("alice")
        storage = {"dir": str(work / label / "files")}
        files = Path(storage["dir"])
        (files / input_key("alice", "", "trace_upload_9dfb42.png")).parent.mkdir(
            parents=True, exist_ok=True
        )
        (files / input_key("alice", "", "trace_upload_9dfb42.png")).write_bytes(_png())
        wsettings = worker_settings(queue, comfy_url, storage, quiet_after_s=3.0,
                                    cancel_deadline_s=30.0)  # fmt: skip
        async with running_worker(wsettings):
            for name, prompt, how in cases():
                prompt = copy.deepcopy(prompt)
                if how == "cancel_prefetched":
                    first = await submit(alice, prompt)
                    await seen.event(first, lambda e: e["type"] == EventType.RUNNING, 60)
                    prompt["1"]["inputs"]["color"] = 12345  # not the cached one
                r = await alice.post("/api/jobs", json={"workflow": prompt})
                if r.status_code != 201:  # the queue's own shape check, before any ComfyUI
                    results[name] = {"queue_refused": r.status_code, **r.json()}
                    continue
                job = r.json()["id"]
                if how == "cancel_running":
                    await seen.event(job, lambda e: e["type"] == EventType.COMFY
                                     and e["data"]["type"] == "executing", 60)  # fmt: skip
                    await alice.post(f"/api/jobs/{job}/cancel")
                elif how == "cancel_prefetched":
                    await seen.event(job, lambda e: e["type"] == EventType.LEASED, 60)
                    await alice.post(f"/api/jobs/{job}/cancel")
                    await seen.final(job, 120)
                    await alice.post(f"/api/jobs/{first}/cancel")
                    await seen.final(first, 120)
                record = await seen.final(job, 180)
                results[name] = _summary(record, seen.of(job))
                print(f"[{label}] {name}: {record['state']}", file=sys.stderr, flush=True)
        await alice.aclose()
    return results


def differences(real: dict[str, Any], double: dict[str, Any]) -> list[str]:
    out = []
    for name in real:
        a, b = real[name], double.get(name)
        if a == b:
            continue
        for key in a:
            theirs = (b or {}).get(key)
            if a[key] != theirs:
                pad = " " * len(key)
                out.append(f"{name}\n    {key}: real   {json.dumps(a[key])[:600]}\n"
                           f"    {pad}  double {json.dumps(theirs)[:600]}")  # fmt: skip
    return out


async def main(real_url: str) -> None:
    with tempfile.TemporaryDirectory(prefix="real-comfyui-") as tmp:
        work = Path(tmp)
        redis = LocalRedis(data_dir=work / "redis").start()
        try:
            real = await run_all(real_url, redis, work, "real")
            redis.stop()
            redis = LocalRedis(data_dir=work / "redis2").start()
            # The real lanczos chain takes seconds on a CPU; the double's nodes take none unless
            # told (cancelling needs a job still running).
            async with start_double(work / "double", node_time_s={"ImageScale": 1.0}) as double:
                fake = await run_all(double.url, redis, work, "double")
        finally:
            redis.stop()
    print(json.dumps({"real": real, "double": fake}, indent=1))
    diffs = differences(real, fake)
    print(f"\n{len(diffs)} difference(s) between the real ComfyUI and the double:")
    for d in diffs:
        print("  - " + d)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", default="http://127.0.0.1:8190")
    asyncio.run(main(parser.parse_args().real))
