"""ComfyUI's per-user data over object storage: `/userdata` (saved workflows, templates,
`comfy.settings.json`...), `/v2/userdata`, `/settings`, `/users`, kept under
`users/<participant>/userdata/` so they outlive the VPS.

Object storage has no folders: a "directory" exists when some object lies under it, as a
new participant's first load expects (`/userdata?dir=workflows` answers 404 until they save a
workflow, which the frontend tolerates). Paths come URL-encoded in one path segment
(`workflows%2Fa.json`), so these routes read the raw path."""

from __future__ import annotations

import asyncio
import posixpath
from urllib.parse import unquote

import orjson
from starlette.requests import Request
from starlette.responses import Response

from services.contracts import userdata_key
from services.gateway import responses
from services.gateway.context import Gateway, Space
from services.gateway.requests import TooLarge, read_body
from services.storage import ObjectInfo, ObjectNotFound

SETTINGS_FILE = "comfy.settings.json"
_settings_locks: dict[str, asyncio.Lock] = {}


def _key(space: Space, path: str) -> str | None:
    """The object of a userdata path, or None if it leaves the participant's folder."""
    if "%" in path:  # ComfyUI decodes once more
        path = unquote(path)
    path = path.replace("\\", "/")
    normalized = posixpath.normpath(path)
    if normalized.startswith("../") or normalized in ("..", ".", "") or normalized.startswith("/"):
        return None
    try:
        return userdata_key(space.name, normalized)
    except ValueError:
        return None


def _root(space: Space) -> str:
    return space.prefix + "userdata/"


def _info(obj: ObjectInfo, relative_to: str) -> dict:
    return {
        "path": obj.key.removeprefix(relative_to),
        "size": obj.size,
        "modified": obj.modified,
        "created": obj.modified,
    }


async def list_userdata(request: Request, gw: Gateway, space: Space) -> Response:
    query = request.query_params
    directory = query.get("dir", "")
    if not directory:
        return responses.text("Directory not provided", 400)
    key = _key(space, directory.rstrip("/"))
    if key is None:
        return responses.text("Invalid directory", 403)
    prefix = key + "/"
    found = await gw.store.list(prefix)
    if not found:
        return responses.text("Directory not found", 404)
    if query.get("recurse", "").lower() != "true":
        found = [o for o in found if "/" not in o.key.removeprefix(prefix)]
    if query.get("full_info", "").lower() == "true":
        return responses.json([_info(o, prefix) for o in found])
    relative = [o.key.removeprefix(prefix) for o in found]
    if query.get("split", "").lower() == "true":
        return responses.json([[r, *r.split("/")] for r in relative])
    return responses.json(relative)


async def list_userdata_v2(request: Request, gw: Gateway, space: Space) -> Response:
    path = unquote(request.query_params.get("path", ""))
    root = _root(space)
    if path:
        key = _key(space, path.rstrip("/"))
        if key is None:
            return responses.text("Invalid path requested", 400)
        prefix = key + "/"
    else:
        prefix = root
    found = await gw.store.list(prefix)
    if not found:
        if prefix == root:
            return responses.json([])
        if await gw.store.stat(prefix[:-1]) is not None:
            return responses.text("Requested path is not a directory", 400)
        return responses.text("Requested path not found", 404)
    results: list[dict] = []
    directories: set[str] = set()
    base = prefix.removeprefix(root)
    for obj in found:
        relative = obj.key.removeprefix(root)
        parts = obj.key.removeprefix(prefix).split("/")
        for depth in range(1, len(parts)):
            directory = base + "/".join(parts[:depth])
            if directory not in directories:
                directories.add(directory)
                results.append(
                    {"name": posixpath.basename(directory), "path": directory, "type": "directory"}
                )
        results.append(
            {"name": parts[-1], "path": relative, "type": "file", "size": obj.size,
             "modified": obj.modified}
        )  # fmt: skip
    results.sort(key=lambda x: (x["type"] != "directory", x["name"].lower()))
    return responses.json(results)


async def get_file(request: Request, gw: Gateway, space: Space, path: str) -> Response:
    key = _key(space, path)
    if key is None:
        return responses.empty(403)
    try:
        data = await gw.store.get(key)
    except ObjectNotFound:
        return responses.empty(404)
    media = "application/json" if key.endswith(".json") else "application/octet-stream"
    return Response(data, media_type=media, headers={"Cache-Control": "no-cache"})


async def post_file(request: Request, gw: Gateway, space: Space, path: str) -> Response:
    key = _key(space, path)
    if key is None:
        return responses.empty(403)
    overwrite = request.query_params.get("overwrite", "true") != "false"
    full_info = request.query_params.get("full_info", "false").lower() == "true"
    if not overwrite and await gw.store.stat(key) is not None:
        return responses.text("File already exists", 409)
    try:
        body = await read_body(request, gw.settings.max_json_bytes)
    except TooLarge:
        return responses.http_error(413)
    await gw.store.put(key, body)
    return await _file_answer(gw, space, key, full_info)


async def _file_answer(gw: Gateway, space: Space, key: str, full_info: bool) -> Response:
    relative = key.removeprefix(_root(space))
    if not full_info:
        return responses.json(relative)
    info = await gw.store.stat(key)
    assert info is not None
    return responses.json(_info(info, _root(space)))


async def delete_file(request: Request, gw: Gateway, space: Space, path: str) -> Response:
    key = _key(space, path)
    if key is None:
        return responses.empty(403)
    if await gw.store.stat(key) is None:
        return responses.empty(404)
    await gw.store.delete(key)
    return responses.empty(204)


async def move_file(request: Request, gw: Gateway, space: Space, path: str, dest: str) -> Response:
    source, target = _key(space, path), _key(space, dest)
    if source is None or target is None:
        return responses.empty(403)
    if await gw.store.stat(source) is None:
        return responses.empty(404)
    overwrite = request.query_params.get("overwrite", "true") != "false"
    full_info = request.query_params.get("full_info", "false").lower() == "true"
    if not overwrite and await gw.store.stat(target) is not None:
        return responses.text("File already exists", 409)
    if source != target:
        await gw.store.copy(source, target)
        await gw.store.delete(source)
    return await _file_answer(gw, space, target, full_info)


# -- settings and users -----------------------------------------------------------------------
async def _settings(gw: Gateway, space: Space) -> dict:
    try:
        value = orjson.loads(await gw.store.get(userdata_key(space.name, SETTINGS_FILE)))
    except (ObjectNotFound, orjson.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


async def get_settings(request: Request, gw: Gateway, space: Space) -> Response:
    return responses.json(await _settings(gw, space))


async def get_setting(request: Request, gw: Gateway, space: Space, setting_id: str) -> Response:
    return responses.json((await _settings(gw, space)).get(unquote(setting_id)))


async def post_settings(
    request: Request, gw: Gateway, space: Space, setting_id: str | None = None
) -> Response:
    """Merge (`/settings`) or set one (`/settings/{id}`), one writer per participant at a
    time on this replica (two tabs saving at once must not lose each other's settings)."""
    try:
        value = orjson.loads(await read_body(request, gw.settings.max_json_bytes))
    except TooLarge:
        return responses.http_error(413)
    except orjson.JSONDecodeError:
        return responses.empty(400)
    if setting_id is None and not isinstance(value, dict):
        return responses.empty(400)
    lock = _settings_locks.setdefault(space.name, asyncio.Lock())
    async with lock:
        settings = await _settings(gw, space)
        if setting_id is None:
            settings.update(value)
        else:
            settings[unquote(setting_id)] = value
        data = orjson.dumps(settings, option=orjson.OPT_INDENT_2)
        await gw.store.put(userdata_key(space.name, SETTINGS_FILE), data, "application/json")
    return responses.empty(200)


async def get_users(request: Request, gw: Gateway, space: Space) -> Response:
    """Single-user ComfyUI's answer: settings live on the server; `migrated` once the
    participant has any userdata."""
    migrated = bool(await gw.store.list(_root(space)))
    return responses.json({"storage": "server", "migrated": migrated})


async def post_users(request: Request, gw: Gateway, space: Space) -> Response:
    return responses.json({"error": "Participants are created by the workshop's admin."}, 400)
