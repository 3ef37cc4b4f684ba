"""Which handler answers which ComfyUI path (under `/userNNN/` and `/userNNN/api/`).

Paths are matched on the raw (still percent-encoded) path, as aiohttp matches ComfyUI's
routes: `/userdata/workflows%2Fa.json` is one segment, decoded after matching."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import unquote

from starlette.responses import Response

from services.gateway import files, info, prompts, userdata, workshop

Handler = Callable[..., Awaitable[Response]]


@dataclass(frozen=True)
class ComfyRoute:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    #: A body may be this large (uploads); None: the JSON limit.
    upload: bool = False


def _r(method: str, path: str, handler: Handler, upload: bool = False) -> ComfyRoute:
    regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path)
    return ComfyRoute(method, re.compile(f"^{regex}$"), handler, upload)


ROUTES: tuple[ComfyRoute, ...] = (
    _r("GET", "/prompt", prompts.get_prompt),
    _r("POST", "/prompt", prompts.post_prompt),
    _r("GET", "/queue", prompts.get_queue),
    _r("POST", "/queue", prompts.post_queue),
    _r("GET", "/history", prompts.get_history),
    _r("POST", "/history", prompts.post_history),
    _r("GET", "/history/{prompt_id}", prompts.get_history_item),
    _r("POST", "/interrupt", prompts.post_interrupt),
    _r("POST", "/free", info.ok),
    _r("GET", "/view", files.view),
    _r("POST", "/upload/image", files.upload_image, upload=True),
    _r("POST", "/upload/mask", files.upload_mask, upload=True),
    _r("GET", "/view_metadata/{folder}", info.view_metadata),
    _r("GET", "/system_stats", info.system_stats),
    _r("GET", "/features", info.get_features),
    _r("GET", "/object_info", info.object_info),
    _r("GET", "/object_info/{node_class}", info.object_info),
    _r("GET", "/embeddings", info.embeddings),
    _r("GET", "/models", info.model_folders),
    _r("GET", "/models/{folder}", info.models_in),
    _r("GET", "/extensions", info.extensions),
    _r("GET", "/i18n", info.empty_object),
    _r("GET", "/workflow_templates", info.empty_object),
    _r("GET", "/templates/index.json", info.no_templates),
    _r("GET", "/experiment/models", info.experiment_models),
    _r("GET", "/experiment/models/{folder}", info.experiment_models_in),
    _r("GET", "/settings", userdata.get_settings),
    _r("POST", "/settings", userdata.post_settings),
    _r("GET", "/settings/{setting_id}", userdata.get_setting),
    _r("POST", "/settings/{setting_id}", userdata.post_settings),
    _r("GET", "/users", userdata.get_users),
    _r("POST", "/users", userdata.post_users),
    _r("GET", "/userdata", userdata.list_userdata),
    _r("GET", "/v2/userdata", userdata.list_userdata_v2),
    _r("GET", "/userdata/{path}", userdata.get_file),
    _r("POST", "/userdata/{path}", userdata.post_file),
    _r("DELETE", "/userdata/{path}", userdata.delete_file),
    _r("POST", "/userdata/{path}/move/{dest}", userdata.move_file),
    _r("GET", "/internal/logs", info.logs),
    _r("GET", "/internal/logs/raw", info.raw_logs),
    _r("PATCH", "/internal/logs/subscribe", info.ok),
    _r("GET", "/internal/folder_paths", info.folder_paths),
    _r("GET", "/internal/files/{kind}", files.internal_files),
    _r("GET", "/workshop/queue", workshop.queue_place),
)

#: What the frontend requests at the server root (FRONTEND.md) that needs a participant.
ROOT_API_ROUTES: tuple[ComfyRoute, ...] = (
    _r("GET", "/view", files.view),
    _r("GET", "/experiment/models", info.experiment_models),
    _r("GET", "/experiment/models/{folder}", info.experiment_models_in),
)


def match(
    routes: tuple[ComfyRoute, ...], method: str, raw_path: str
) -> tuple[ComfyRoute | None, dict[str, str], bool]:
    """(the route, its decoded path parameters, whether the path exists for another method)."""
    other_method = False
    for route in routes:
        m = route.pattern.match(raw_path)
        if m is None:
            continue
        if route.method != method and not (method == "HEAD" and route.method == "GET"):
            other_method = True
            continue
        return route, {k: unquote(v) for k, v in m.groupdict().items()}, False
    return None, {}, other_method
