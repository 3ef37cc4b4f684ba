"""Redis memory per 1,000 finished jobs, with realistic graphs.

    uv run python -m bench.memory [--jobs 2000] [--progress-steps 20]

A private Redis (AOF on, like production) and the service's own JobStore, in process (no
HTTP: only what lands in Redis matters here). Each job goes submit -> lease -> start ->
N progress steps -> complete with a SaveImage-style output, as a worker reports it.

Two scenarios, each on an emptied Redis:
  a) the SD1.5 txt2img API graph from trace 10, client_id set, no extra_data;
  b) the same graph plus a ComfyUI UI-format workflow of ~100 KB in
     extra_data.extra_pnginfo.workflow (what the frontend sends; none is in the traces, so
     one of realistic shape is synthesised from object_info: LiteGraph nodes with inputs,
     outputs, links, widgets_values, groups, extra.ds).

Reports `INFO memory` used_memory before/after (after a settle), bytes per 1,000 jobs, and a
breakdown by key family (MEMORY USAGE ... SAMPLES 0) including the events stream's share.
Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
import uuid
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.queue import OUTPUTS, sd15_workflow  # noqa: E402
from services.local_redis import LocalRedis  # noqa: E402
from services.queue.settings import QueueSettings  # noqa: E402
from services.queue.store import JobStore  # noqa: E402

OBJECT_INFO = ROOT.parent / "shared" / "comfyui" / "object_info_with_random_ckpt.json"
PRIMITIVES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
_PROMPT_TEXT = (
    "portrait photo of an astronaut cat, cinematic lighting, 35mm, highly detailed, "
    "volumetric fog, bokeh, golden hour, intricate, sharp focus, octane render, trending, "
    "watercolor, oil painting, isometric, low poly, studio ghibli, moody, neon, cyberpunk"
)
WORDS = _PROMPT_TEXT.split()


def _prompt(rng: random.Random) -> str:
    return ", ".join(" ".join(rng.sample(WORDS, 3)) for _ in range(rng.randint(4, 12)))


def _widget_value(spec: Any, rng: random.Random, name: str) -> Any:
    kind, opts = spec[0], (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})
    if isinstance(kind, list):  # a combo
        return kind[0] if kind else ""
    if kind == "INT":
        return rng.randint(0, 2**32) if name in ("seed", "noise_seed") else opts.get("default", 0)
    if kind == "FLOAT":
        return opts.get("default", 1.0)
    if kind == "BOOLEAN":
        return opts.get("default", False)
    if kind == "STRING":
        return _prompt(rng) if opts.get("multiline") else opts.get("default", "")
    return None


def synth_ui_workflow(target_bytes: int = 100_000, seed: int = 7) -> dict[str, Any]:
    """A LiteGraph (ComfyUI frontend 1.27) workflow of about `target_bytes` of JSON.

    Repeats a txt2img chain (checkpoint, 2 prompts, latent, sampler, decode, save) and adds
    the nodes people bolt on (LoRA, upscale, previews, notes), wired with real links and
    the object_info widget defaults, until the JSON reaches the target size.
    """
    info = json.loads(OBJECT_INFO.read_text())
    rng = random.Random(seed)
    nodes: list[dict[str, Any]] = []
    links: list[list[Any]] = []
    ids = {"node": 0, "link": 0}

    def add(cls: str, x: float, y: float, feeds: dict[str, tuple[int, int]]) -> dict[str, Any]:
        spec = info[cls]
        ids["node"] += 1
        nid = ids["node"]
        inputs, widgets = [], []
        req = {**spec["input"].get("required", {}), **spec["input"].get("optional", {})}
        for name, ispec in req.items():
            kind = ispec[0]
            if isinstance(kind, str) and kind not in PRIMITIVES:
                link = None
                if name in feeds:
                    src, slot = feeds[name]
                    ids["link"] += 1
                    link = ids["link"]
                    links.append([link, src, slot, nid, len(inputs), kind])
                    out = nodes_by_id[src]["outputs"][slot]
                    out["links"] = [*(out["links"] or []), link]
                inputs.append({"localized_name": name, "name": name, "type": kind, "link": link})
            else:
                widgets.append(_widget_value(ispec, rng, name))
                inputs.append(
                    {
                        "localized_name": name,
                        "name": name,
                        "type": kind if isinstance(kind, str) else "COMBO",
                        "widget": {"name": name},
                        "link": None,
                    }
                )
                if isinstance(ispec[1] if len(ispec) > 1 else None, dict) and ispec[1].get(
                    "control_after_generate"
                ):
                    widgets.append("randomize")
        outputs = [
            {"localized_name": oname, "name": oname, "type": otype, "slot_index": i, "links": []}
            for i, (otype, oname) in enumerate(
                zip(spec["output"], spec["output_name"], strict=False)
            )
        ]
        node = {
            "id": nid,
            "type": cls,
            "pos": [round(x, 1), round(y, 1)],
            "size": [rng.choice([270, 315, 400, 425]), rng.choice([58, 98, 126, 262, 474])],
            "flags": {},
            "order": nid - 1,
            "mode": 0,
            "inputs": inputs,
            "outputs": outputs,
            "properties": {"cnr_id": "comfy-core", "ver": "0.3.64", "Node name for S&R": cls},
            "widgets_values": widgets,
        }
        nodes.append(node)
        nodes_by_id[nid] = node
        return node

    nodes_by_id: dict[int, dict[str, Any]] = {}
    groups = []
    row = 0
    while True:
        y = row * 700.0
        ck = add("CheckpointLoaderSimple", 0, y, {})["id"]
        lora = add("LoraLoader", 350, y, {"model": (ck, 0), "clip": (ck, 1)})["id"]
        pos = add("CLIPTextEncode", 700, y, {"clip": (lora, 1)})["id"]
        neg = add("CLIPTextEncode", 700, y + 250, {"clip": (lora, 1)})["id"]
        lat = add("EmptyLatentImage", 700, y + 500, {})["id"]
        ks = add(
            "KSampler",
            1100,
            y,
            {
                "model": (lora, 0),
                "positive": (pos, 0),
                "negative": (neg, 0),
                "latent_image": (lat, 0),
            },
        )["id"]
        dec = add("VAEDecode", 1450, y, {"samples": (ks, 0), "vae": (ck, 2)})["id"]
        up = add("ImageScaleBy", 1700, y, {"image": (dec, 0)})["id"]
        add("PreviewImage", 1700, y + 300, {"images": (dec, 0)})
        add("SaveImage", 2000, y, {"images": (up, 0)})
        if "Note" in info:
            add("Note", 0, y + 400, {})
        groups.append(
            {
                "id": row + 1,
                "title": f"txt2img variant {row + 1}",
                "bounding": [-20, y - 40, 2400, 680],
                "color": "#3f789e",
                "font_size": 24,
                "flags": {},
            }
        )
        row += 1
        wf = _wrap(nodes, links, groups, ids)
        if len(orjson.dumps(wf)) >= target_bytes:
            return wf


def _wrap(
    nodes: list[Any], links: list[Any], groups: list[Any], ids: dict[str, int]
) -> dict[str, Any]:
    return {
        "id": str(uuid.UUID(int=7)),
        "revision": 0,
        "last_node_id": ids["node"],
        "last_link_id": ids["link"],
        "nodes": nodes,
        "links": links,
        "groups": groups,
        "config": {},
        "extra": {
            "ds": {"scale": 0.6830134553650705, "offset": [412.3, 96.8]},
            "frontendVersion": "1.27.10",
            "VHS_latentpreview": False,
        },
        "version": 0.4,
    }


def settings(url: str) -> QueueSettings:
    return QueueSettings(
        redis_url=url,
        token_secret="bench-secret-bench-secret-bench-secret",
        admin_password="bench-admin-password",
    )


async def used_memory(r: aioredis.Redis) -> int:
    await asyncio.sleep(1.0)  # settle: lazy frees, stream trimming, AOF rewrite buffers
    return int((await r.info("memory"))["used_memory"])


async def breakdown(r: aioredis.Redis, prefix: str) -> dict[str, int]:
    """Bytes by key family (`job`, `wf`, `events`, ...), exact (SAMPLES 0)."""
    keys = [k async for k in r.scan_iter(match=prefix + "*", count=1000)]
    async with r.pipeline(transaction=False) as pipe:
        for k in keys:
            pipe.memory_usage(k, samples=0)
        sizes = await pipe.execute()
    out: Counter[str] = Counter()
    for k, size in zip(keys, sizes, strict=True):
        out[k.decode()[len(prefix) :].split(":", 1)[0]] += int(size or 0)
    return dict(out.most_common())


async def scenario(
    r: aioredis.Redis,
    url: str,
    name: str,
    jobs: int,
    users: int,
    steps: int,
    extra_data: dict[str, Any] | None,
) -> dict[str, Any]:
    await r.flushall()  # our private server only (see main)
    s = settings(url)
    store = JobStore(aioredis.Redis.from_url(url), s)
    workflow = sd15_workflow()
    before = await used_memory(r)
    t = time.perf_counter()
    for i in range(jobs):
        wf = {**workflow, "3": {**workflow["3"], "inputs": {**workflow["3"]["inputs"], "seed": i}}}
        await store.submit(
            f"participant{i % users:03d}", 0, wf, uuid.uuid4().hex, extra_data
        )
        leased = await store.claim("gpu-host-1/0")
        assert leased.job is not None
        job_id, lease_id = leased.job.id, leased.lease_id
        await store.start(job_id, lease_id)
        for step in range(1, steps + 1):
            await store.progress(job_id, lease_id, {"value": step, "max": steps, "node": "3"})
        await store.complete(job_id, lease_id, OUTPUTS)
    elapsed = time.perf_counter() - t
    after = await used_memory(r)
    parts = await breakdown(r, s.key_prefix)
    xlen = await r.xlen(s.key_prefix + "events")
    await store.redis.aclose()
    delta = after - before
    events = parts.get("events", 0)
    res = {
        "scenario": name,
        "jobs": jobs,
        "used_memory_before": before,
        "used_memory_after": after,
        "bytes_per_1000_jobs": round(delta / jobs * 1000),
        "events_stream_bytes": events,
        "events_stream_entries": xlen,
        "events_bytes_per_entry": round(events / xlen) if xlen else 0,
        "events_share": round(events / delta, 3) if delta else 0.0,
        "breakdown_bytes": parts,
        "seconds": round(elapsed, 2),
    }
    mb = delta / jobs * 1000 / 2**20
    print(
        f"[{name}] {jobs} jobs: used_memory {before / 2**20:.1f} -> {after / 2**20:.1f} MiB; "
        f"{mb:.2f} MiB per 1,000 finished jobs; events stream {events / 2**20:.2f} MiB "
        f"({xlen} entries, {res['events_share']:.0%} of the growth)"
    )
    print("    by key family (MiB): " + ", ".join(f"{k} {v / 2**20:.2f}" for k, v in parts.items()))
    return res


async def run(args: argparse.Namespace) -> dict[str, Any]:
    ui = synth_ui_workflow(args.ui_bytes)
    ui_raw = orjson.dumps(ui)
    print(
        f"synthetic UI workflow: {len(ui['nodes'])} nodes, {len(ui['links'])} links, "
        f"{len(ui_raw) / 1000:.1f} KB JSON ({len(zlib.compress(ui_raw, 1)) / 1000:.1f} KB zlib-1)"
    )
    api_raw = orjson.dumps(sd15_workflow())
    print(f"SD1.5 API graph: {len(api_raw)} B JSON ({len(zlib.compress(api_raw, 1))} B zlib-1)")
    with tempfile.TemporaryDirectory(prefix="queue-mem-") as tmp:
        server = LocalRedis(data_dir=Path(tmp), appendonly=True).start()
        assert server.port != 6379  # flushall below touches only this private server
        try:
            r = aioredis.Redis.from_url(server.url)
            a = await scenario(
                r, server.url, "a_sd15_api", args.jobs, args.users, args.progress_steps, None
            )
            b = await scenario(
                r,
                server.url,
                "b_sd15_plus_ui_100k",
                args.jobs,
                args.users,
                args.progress_steps,
                {"extra_pnginfo": {"workflow": ui}},
            )
            await r.aclose()
        finally:
            server.stop()
    return {
        "a_bytes_per_1000_jobs": a["bytes_per_1000_jobs"],
        "b_bytes_per_1000_jobs": b["bytes_per_1000_jobs"],
        "a_events_share": a["events_share"],
        "b_events_share": b["events_share"],
        "ui_workflow_bytes": len(ui_raw),
        "ui_workflow_zlib1_bytes": len(zlib.compress(ui_raw, 1)),
        "progress_steps": args.progress_steps,
        "scenarios": [a, b],
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--users", type=int, default=20, help="participants (history is per user)")
    ap.add_argument("--progress-steps", type=int, default=20, help="progress events per job")
    ap.add_argument("--ui-bytes", type=int, default=100_000, help="size of the UI workflow")
    args = ap.parse_args()
    result = asyncio.run(run(args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
