"""ComfyUI's read-only routes about the server, answered for the GPU pool as a whole and
without anything that names a host, a path or another participant: `/system_stats`,
`/features`, `/object_info`, `/embeddings`, `/models`, `/extensions`, `/i18n`,
`/workflow_templates`, `/experiment/models`, `/view_metadata`, `/internal/*`, `/free`."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from services.comfy.catalog import MODEL_FOLDERS
from services.contracts import safe_relpath
from services.gateway import responses
from services.gateway.context import Gateway, Space
from services.storage import ObjectNotFound, ObjectStore

_POOL_CACHE_S = 2.0
_pool: dict[str, Any] = {"at": 0.0, "value": None}


async def pool(gw: Gateway, token: str) -> dict[str, Any]:
    """The queue's `/api/pool`, shared by every participant on this replica for 2 s."""
    now = time.monotonic()
    if _pool["value"] is None or now - _pool["at"] > _POOL_CACHE_S:
        _pool["value"] = await gw.queue.json("GET", "/api/pool", token)
        _pool["at"] = now
    return _pool["value"]  # type: ignore[no-any-return]


def features(gw: Gateway) -> dict[str, Any]:
    return {"supports_preview_metadata": True, "max_upload_size": gw.settings.max_upload_bytes}


async def get_features(request: Request, gw: Gateway, space: Space) -> Response:
    return responses.json(features(gw))


async def system_stats(request: Request, gw: Gateway, space: Space) -> Response:
    """ComfyUI's `/system_stats` for the pool: versions and devices of the live workers."""
    p = await pool(gw, space.token)
    return responses.json(
        {
            "system": {
                "os": os.name,
                "ram_total": 0,
                "ram_free": 0,
                "comfyui_version": p.get("comfyui_version") or "unknown",
                "required_frontend_version": p.get("required_frontend_version")
                or gw.frontend.version,
                "installed_templates_version": None,
                "required_templates_version": None,
                "python_version": sys.version,
                "pytorch_version": "",
                "embedded_python": False,
                "argv": ["main.py"],
            },
            "devices": p.get("devices") or [],
        }
    )


async def object_info(
    request: Request, gw: Gateway, space: Space, node_class: str | None = None
) -> Response:
    nodes = await gw.catalog.current(space.token)
    if node_class is not None:
        if node_class not in nodes:
            return responses.json({})
        nodes = {node_class: nodes[node_class]}
    combo, _ = await space.uploads(gw)
    return responses.json(gw.catalog.for_participant(nodes, combo))


async def _models(gw: Gateway, space: Space) -> dict[str, list[str]]:
    return (await pool(gw, space.token)).get("models") or {}


async def embeddings(request: Request, gw: Gateway, space: Space) -> Response:
    names = (await _models(gw, space)).get("embeddings", [])
    return responses.json([os.path.splitext(n)[0] for n in names])


async def model_folders(request: Request, gw: Gateway, space: Space) -> Response:
    return responses.json(list(MODEL_FOLDERS))


async def models_in(request: Request, gw: Gateway, space: Space, folder: str) -> Response:
    if folder not in MODEL_FOLDERS:
        return responses.empty(404)
    return responses.json((await _models(gw, space)).get(folder, []))


async def experiment_models(request: Request, gw: Gateway, space: Space) -> Response:
    """The model browser's folders, without the workers' paths."""
    return responses.json([{"name": f, "folders": []} for f in MODEL_FOLDERS])


async def experiment_models_in(
    request: Request, gw: Gateway, space: Space, folder: str
) -> Response:
    if folder not in MODEL_FOLDERS:
        return responses.empty(404)
    names = (await _models(gw, space)).get(folder, [])
    return responses.json([{"name": n, "pathIndex": 0} for n in names])


async def extensions(request: Request, gw: Gateway, space: Space) -> Response:
    return responses.json(gw.frontend.extensions)


async def empty_object(request: Request, gw: Gateway, space: Space) -> Response:
    """`/i18n`, `/workflow_templates`: no custom nodes, no translations or templates."""
    return responses.json({})


async def no_templates(request: Request, gw: Gateway, space: Space) -> Response:
    """`/templates/index.json`: the workflow-templates package is not installed (its
    templates name models the pool may not have); an empty index, not a 404 the frontend
    reports as an error."""
    return responses.json([])


#: ComfyUI reads at most this much of a safetensors header (`safetensors_header`).
_HEADER_MAX = 1024 * 1024


async def view_metadata(request: Request, gw: Gateway, space: Space, folder: str) -> Response:
    """ComfyUI's `/view_metadata/{folder}?filename=`: a model's safetensors `__metadata__`
    (the frontend shows it in the model browser), for a model the pool has, read from the
    models bucket the hosts fetch from (its first bytes only). 404 as ComfyUI's: not a
    `.safetensors` name, not in the pool, unreadable, or no metadata."""
    filename = request.query_params.get("filename", "")
    if gw.models is None or folder not in MODEL_FOLDERS or not filename.endswith(".safetensors"):
        return responses.empty(404)
    if filename not in (await _models(gw, space)).get(folder, []):
        return responses.empty(404)
    try:
        header = await _safetensors_header(gw.models, f"{folder}/{filename}")
        metadata = orjson.loads(header)["__metadata__"] if header is not None else None
    except (ValueError, KeyError, TypeError, ObjectNotFound):
        metadata = None
    if not isinstance(metadata, dict):
        return responses.empty(404)
    return responses.json(metadata)


async def _safetensors_header(store: ObjectStore, key: str) -> bytes | None:
    """The JSON header of a safetensors object (8-byte little-endian length, then JSON),
    streamed only as far as the header goes; None past ComfyUI's 1 MiB cap."""
    safe_relpath(key, "model")
    data = b""
    stream = store.stream(key)
    try:
        async for chunk in stream:
            data += chunk
            if len(data) >= 8:
                length = int.from_bytes(data[:8], "little")
                if length > _HEADER_MAX:
                    return None
                if len(data) >= 8 + length:
                    return data[8 : 8 + length]
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    return None


async def logs(request: Request, gw: Gateway, space: Space) -> Response:
    """The server log is the operators' (it names hosts and other participants)."""
    return responses.json("")


async def raw_logs(request: Request, gw: Gateway, space: Space) -> Response:
    return responses.json({"entries": [], "size": {"cols": 80, "rows": 24}})


async def folder_paths(request: Request, gw: Gateway, space: Space) -> Response:
    return responses.json({f: [] for f in MODEL_FOLDERS})


async def ok(request: Request, gw: Gateway, space: Space) -> Response:
    """`/free`, `/internal/logs/subscribe`: accepted, nothing to do for one participant."""
    return responses.empty(200)
