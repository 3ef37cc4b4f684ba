"""ComfyUI's read-only routes about the server, answered for the GPU pool as a whole and
without anything that names a host, a path or another participant: `/system_stats`,
`/features`, `/object_info`, `/embeddings`, `/models`, `/extensions`, `/i18n`,
`/workflow_templates`, `/experiment/models`, `/view_metadata`, `/internal/*`, `/free`."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from services.comfy.catalog import MODEL_FOLDERS
from services.gateway import responses
from services.gateway.context import Gateway, Space

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


async def view_metadata(request: Request, gw: Gateway, space: Space, folder: str) -> Response:
    """Model files live on the workers; their headers are not read here."""
    return responses.empty(404)


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
