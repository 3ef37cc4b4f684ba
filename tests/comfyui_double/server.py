"""The double's HTTP and WebSocket server: ComfyUI 0.3.64's routes, on aiohttp like ComfyUI.

One `ComfyServer` is one ComfyUI process lifetime: its queue, history, caches and sockets
live and die with it (`ComfyDouble.restart` makes a new one on the same port and folders).
Every route answers under `/` and `/api/` (the `/internal/*` routes only at the root), with
the status codes, bodies and headers the traces record; see test_comfyui_double.py for the
documented differences.
"""

from __future__ import annotations

import asyncio
import glob
import io
import json
import logging
import mimetypes
import os
import struct
import sys
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from services.comfy import catalog as cat
from services.comfy import shapes
from services.comfy.validation import NO_PROMPT_ERROR, MalformedPrompt, validate_prompt
from tests.comfyui_double.executor import Executor, PromptQueue, QueueItem, Stats, Timing
from tests.comfyui_double.folders import Folders

log = logging.getLogger("comfyui_double")

COMFYUI_VERSION = "0.3.64"
FRONTEND_VERSION = "1.27.10"
TEMPLATES_VERSION = "0.1.95"
MAX_UPLOAD_SIZE = 100 * 1024 * 1024
SERVER_FEATURES = {"supports_preview_metadata": True, "max_upload_size": MAX_UPLOAD_SIZE}
INDEX_HTML = (
    '<!doctype html><html lang="en"><head><meta charset="UTF-8"><title>ComfyUI</title>'
    "</head><body>ComfyUI test double: no frontend</body></html>"
)

mimetypes.add_type("image/webp", ".webp")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Hub:
    """The WebSocket side: ComfyUI's socket map, its message queue and publisher.

    Messages are queued and sent in order by one task, as ComfyUI's `send_sync` +
    `publish_loop` do. `quiet` drops them (the socket stays open, nothing arrives).
    """

    def __init__(self) -> None:
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.open: set[web.WebSocketResponse] = set()  # every open socket, mapped or not
        self.metadata: dict[str, dict[str, Any]] = {}
        self.quiet = False
        self._outbox: asyncio.Queue[tuple[str | bytes, str | None]] = asyncio.Queue()

    def send(self, type_: str, data: Any, sid: str | None = None) -> None:
        self._outbox.put_nowait((json.dumps(shapes.message(type_, data)), sid))

    def send_bytes(self, frame: bytes, sid: str | None = None) -> None:
        self._outbox.put_nowait((frame, sid))

    def supports_preview_metadata(self, sid: str | None) -> bool:
        return (
            sid in self.metadata
            and self.metadata[sid].get("feature_flags", {}).get("supports_preview_metadata", False)
            is True
        )

    async def publish(self) -> None:
        while True:
            payload, sid = await self._outbox.get()
            if self.quiet:
                continue
            targets = (
                list(self.sockets.values())
                if sid is None
                else ([self.sockets[sid]] if sid in self.sockets else [])
            )
            for ws in targets:
                try:
                    if isinstance(payload, bytes):
                        await ws.send_bytes(payload)
                    else:
                        await ws.send_str(payload)
                except (ConnectionError, RuntimeError) as error:
                    log.warning("send error: %s", error)


class ComfyServer:
    """One ComfyUI process lifetime: state, routes and the executor task."""

    def __init__(
        self,
        folders: Folders,
        base_catalog: cat.Catalog,
        timing: Timing,
        previews: bool,
        stats: Stats,
        argv: list[str],
        devices: list[dict] | None = None,
        debug_routes: bool = False,
    ):
        self.folders = folders
        self.base_catalog = base_catalog
        self.argv = argv
        self.devices = devices
        self.hub = Hub()
        self.queue = PromptQueue(lambda: self.hub.send("status", self.queue_status()))
        self.executor = Executor(
            self.queue, self.hub, self.catalog, folders, timing, previews, stats
        )
        self.number = 0
        self.requests_in_flight: set[asyncio.Task] = set()
        self.request_started = asyncio.Condition()  # notified as each request reaches a handler
        self._catalog_cache: tuple[Any, cat.Catalog] | None = None
        self._tasks: list[asyncio.Task] = []
        self.app = web.Application(
            client_max_size=MAX_UPLOAD_SIZE, middlewares=[self._track_request, _origin_only]
        )
        self._add_routes(debug_routes)
        self.runner: web.AppRunner | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> int:
        self.folders.create()
        self.folders.clear_temp()
        self._tasks = [
            asyncio.create_task(self.hub.publish()),
            asyncio.create_task(self.executor.run()),
        ]
        self.runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=0.1
        )
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port, reuse_address=True)
        await site.start()
        return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        """Die: stop listening, cut every socket and request, stop executing."""
        for task in self._tasks:
            task.cancel()
        for task in list(self.requests_in_flight):
            task.cancel()
        for ws in list(self.hub.open):
            if ws._req is not None and ws._req.transport is not None:  # drop, no close frame
                ws._req.transport.abort()
        if self.runner is not None:
            await self.runner.cleanup()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @web.middleware
    async def _track_request(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        task = asyncio.current_task()
        if task is not None:
            self.requests_in_flight.add(task)
        async with self.request_started:
            self.request_started.notify_all()
        try:
            return await handler(request)
        finally:
            if task is not None:
                self.requests_in_flight.discard(task)

    # -- state ----------------------------------------------------------------------------

    def queue_status(self) -> dict[str, Any]:
        return {"status": shapes.queue_info(self.queue.remaining())}

    def catalog(self) -> cat.Catalog:
        """The base catalogue with this double's input files and models in the file lists."""
        inputs = self.folders.input_files()
        models = self.folders.models()
        key = (tuple(inputs), tuple((k, tuple(v)) for k, v in models.items()))
        if self._catalog_cache is None or self._catalog_cache[0] != key:

            def files_for(item: cat.FileInput) -> list[str] | None:
                if item.kind.startswith("model:"):
                    return models.get(item.kind.removeprefix("model:"), [])
                if item.kind == "file_upload":
                    return None
                return cat.files_for_upload_flag(item.kind, inputs)

            built = cat.with_file_lists(self.base_catalog, files_for)
            for class_type in ("LoadImageSetFromFolderNode", "LoadImageTextSetFromFolderNode"):
                spec = built.get(class_type, {}).get("input", {}).get("required", {}).get("folder")
                if spec is not None and isinstance(spec[0], list):
                    spec[0] = self.folders.input_subfolders()
            self._catalog_cache = (key, built)
        return self._catalog_cache[1]

    # -- routes ---------------------------------------------------------------------------

    def _add_routes(self, debug_routes: bool) -> None:
        routes: list[tuple[str, str, Handler]] = [
            ("GET", "/ws", self.websocket),
            ("GET", "/", self.index),
            ("GET", "/embeddings", self.embeddings),
            ("GET", "/models", self.model_types),
            ("GET", "/models/{folder}", self.models),
            ("GET", "/extensions", self.extensions),
            ("POST", "/upload/image", self.upload_image),
            ("POST", "/upload/mask", self.upload_mask),
            ("GET", "/view", self.view),
            ("GET", "/view_metadata/{folder_name}", self.view_metadata),
            ("GET", "/system_stats", self.system_stats),
            ("GET", "/features", self.features),
            ("GET", "/prompt", self.get_prompt),
            ("POST", "/prompt", self.post_prompt),
            ("GET", "/object_info", self.object_info),
            ("GET", "/object_info/{node_class}", self.object_info_node),
            ("GET", "/history", self.get_history),
            ("GET", "/history/{prompt_id}", self.get_history_item),
            ("POST", "/history", self.post_history),
            ("GET", "/queue", self.get_queue),
            ("POST", "/queue", self.post_queue),
            ("POST", "/interrupt", self.interrupt),
            ("POST", "/free", self.free),
            ("GET", "/users", self.users),
            ("GET", "/settings", self.get_settings),
            ("POST", "/settings", self.post_settings),
            ("GET", "/settings/{id}", self.get_setting),
            ("POST", "/settings/{id}", self.post_setting),
            ("GET", "/userdata", self.list_userdata),
            ("GET", "/userdata/{file}", self.get_userdata),
            ("POST", "/userdata/{file}", self.post_userdata),
            ("DELETE", "/userdata/{file}", self.delete_userdata),
            ("GET", "/i18n", self.empty_object),
            ("GET", "/workflow_templates", self.empty_object),
            ("GET", "/experiment/models", self.experiment_models),
            ("GET", "/experiment/models/{folder}", self.experiment_model_files),
        ]
        for prefix in ("/api", ""):
            for method, path, handler in routes:
                self.app.router.add_route(method, prefix + path, handler)
        for method, path, handler in [
            ("GET", "/internal/logs", self.internal_logs),
            ("GET", "/internal/logs/raw", self.internal_logs_raw),
            ("GET", "/internal/folder_paths", self.internal_folder_paths),
            ("GET", "/internal/files/{directory_type}", self.internal_files),
        ]:
            self.app.router.add_route(method, path, handler)
        if debug_routes:
            self.app.router.add_route("GET", "/__double__/stats", self.debug_stats)
            self.app.router.add_route("POST", "/__double__/fail_next", self.debug_fail_next)
            self.app.router.add_route("POST", "/__double__/quiet_ws", self.debug_quiet)

    # -- WebSocket --------------------------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.rel_url.query.get("clientId", "")
        if sid:
            self.hub.sockets.pop(sid, None)  # a reconnect replaces the old socket in the map
        else:
            sid = uuid.uuid4().hex
        self.hub.sockets[sid] = ws
        self.hub.metadata[sid] = {"feature_flags": {}}
        self.hub.open.add(ws)
        try:
            if not self.hub.quiet:
                await ws.send_str(json.dumps(shapes.status_message(self.queue.remaining(), sid)))
                if self.executor.client_id == sid and self.executor.last_node_id is not None:
                    await ws.send_str(
                        json.dumps(
                            shapes.message("executing", {"node": self.executor.last_node_id})
                        )
                    )
            first = True
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                except json.JSONDecodeError:
                    log.warning("Invalid JSON received from client %s", sid)
                    continue
                if first and isinstance(data, dict) and data.get("type") == "feature_flags":
                    self.hub.metadata[sid]["feature_flags"] = data.get("data", {})
                    self.hub.send("feature_flags", dict(SERVER_FEATURES), sid)
                first = False
        finally:
            # As ComfyUI: this also unmaps a newer socket that reused the same clientId.
            self.hub.sockets.pop(sid, None)
            self.hub.metadata.pop(sid, None)
            self.hub.open.discard(ws)
        return ws

    # -- prompts and queue ----------------------------------------------------------------------

    async def get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response(shapes.queue_info(self.queue.remaining()))

    async def post_prompt(self, request: web.Request) -> web.Response:
        body = await request.json()  # bad JSON: ComfyUI's bare 500
        if "number" in body:
            number: int | float = float(body["number"])
        else:
            number = -self.number if _member(body, "front") else self.number
            self.number += 1
        if "prompt" not in body:
            return web.json_response({"error": NO_PROMPT_ERROR, "node_errors": {}}, status=400)
        prompt = body["prompt"]
        prompt_id = str(body.get("prompt_id", uuid.uuid4()))
        try:
            result = validate_prompt(
                prompt,
                self.catalog(),
                partial_execution_targets=body.get("partial_execution_targets"),
                file_exists=self.folders.exists_annotated,
            )
        except MalformedPrompt as error:
            raise RuntimeError(str(error)) from error  # ComfyUI's bare 500 as well
        extra_data = body.get("extra_data", {})
        if "client_id" in body:
            extra_data["client_id"] = body["client_id"]
        if not result.ok:
            return web.json_response(result.error_body(), status=400)
        self.queue.put(QueueItem(number, prompt_id, prompt, extra_data, result.outputs))
        return web.json_response(shapes.prompt_response(prompt_id, number, result.node_errors))

    async def get_queue(self, request: web.Request) -> web.Response:
        return web.json_response(
            shapes.queue_body(self.queue.running_entries(), self.queue.pending_entries())
        )

    async def post_queue(self, request: web.Request) -> web.Response:
        body = await request.json()
        if _member(body, "clear"):
            self.queue.wipe()
        for prompt_id in _member(body, "delete") or []:
            self.queue.delete(prompt_id)
        return web.Response(status=200)

    async def interrupt(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            body = {}
        prompt_id = body.get("prompt_id")
        if not prompt_id or any(
            item.prompt_id == prompt_id for item in self.queue.running.values()
        ):
            self.executor.interrupt()
        return web.Response(status=200)

    async def free(self, request: web.Request) -> web.Response:
        body = await request.json()
        for flag in ("unload_models", "free_memory"):
            if body.get(flag, False):
                self.queue.set_flag(flag, body[flag])
        return web.Response(status=200)

    async def get_history(self, request: web.Request) -> web.Response:
        max_items = request.rel_url.query.get("max_items")
        offset = request.rel_url.query.get("offset")
        return web.json_response(
            self.queue.get_history(
                max_items=int(max_items) if max_items is not None else None,
                offset=int(offset) if offset is not None else -1,
            )
        )

    async def get_history_item(self, request: web.Request) -> web.Response:
        prompt_id = request.match_info["prompt_id"]
        entry = self.queue.history.get(prompt_id)
        return web.json_response({prompt_id: entry} if entry is not None else {})

    async def post_history(self, request: web.Request) -> web.Response:
        body = await request.json()
        if _member(body, "clear"):
            self.queue.history.clear()
        for prompt_id in _member(body, "delete") or []:
            self.queue.history.pop(prompt_id, None)
        return web.Response(status=200)

    # -- files ------------------------------------------------------------------------------

    async def view(self, request: web.Request) -> web.StreamResponse:
        query = request.rel_url.query
        if "filename" not in query:
            return web.Response(status=404)
        filename, base = self.folders.annotated(query["filename"])
        if not filename:
            return web.Response(status=400)
        if filename[0] == "/" or ".." in filename:
            return web.Response(status=400)
        if base is None:
            base = self.folders.by_type(query.get("type", "output"))
        if base is None:
            return web.Response(status=400)
        folder = _inside(base, query["subfolder"]) if "subfolder" in query else base
        if folder is None:
            return web.Response(status=403)
        filename = Path(filename).name
        path = folder / filename
        if not await asyncio.to_thread(path.is_file):
            return web.Response(status=404)
        disposition = {"Content-Disposition": f'filename="{filename}"'}
        channel = query.get("channel")
        if "preview" in query or channel in ("rgb", "a"):
            body, content_type = await asyncio.to_thread(
                _render_view, path, query.get("preview"), channel or ""
            )
            return web.Response(body=body, content_type=content_type, headers=disposition)
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        if content_type in {
            "text/html",
            "text/html-sandboxed",
            "application/xhtml+xml",
            "text/javascript",
            "text/css",
        }:
            content_type = "application/octet-stream"
        return web.FileResponse(path, headers={**disposition, "Content-Type": content_type})

    async def upload_image(self, request: web.Request) -> web.Response:
        post = await request.post()
        return await self._upload(post, None)

    async def upload_mask(self, request: web.Request) -> web.Response:
        post = await request.post()
        return await self._upload(post, self._apply_mask)

    async def _upload(
        self, post: Any, save: Callable[[Any, Any, Path], None] | None
    ) -> web.Response:
        image = post.get("image")
        type_name = post.get("type") or "input"
        base = self.folders.by_type(type_name)
        if base is None:
            raise ValueError(f"unknown upload type {type_name!r}")  # ComfyUI fails here too (500)
        if not (image is not None and getattr(image, "file", None)):
            return web.Response(status=400)
        filename = image.filename
        if not filename:
            return web.Response(status=400)
        subfolder = post.get("subfolder", "")
        folder = _inside(base, subfolder)
        if folder is None or _inside(base, os.path.join(subfolder, filename)) is None:
            return web.Response(status=400)
        data = image.file.read()
        name, duplicate = await asyncio.to_thread(
            _place_upload, folder, filename, data, post.get("overwrite") in ("true", "1")
        )
        if not duplicate:
            target = folder / name
            if save is not None:
                await asyncio.to_thread(save, post, data, target)
            else:
                await asyncio.to_thread(target.write_bytes, data)
        return web.json_response({"name": name, "subfolder": subfolder, "type": type_name})

    def _apply_mask(self, post: Any, data: bytes, target: Path) -> None:
        """`/upload/mask`: the original image with the mask's alpha channel."""
        original_ref = json.loads(post.get("original_ref"))
        filename, base = self.folders.annotated(original_ref["filename"])
        if not filename or filename[0] == "/" or ".." in filename:
            return
        base = base or self.folders.by_type(original_ref.get("type", "output"))
        if base is None:
            return
        folder = Path(base) / original_ref.get("subfolder", "")
        source = folder / filename
        if not source.is_file():
            return
        with Image.open(source) as original:
            info = PngInfo()
            for key, value in getattr(original, "text", {}).items():
                info.add_text(key, value)
            rgba = original.convert("RGBA")
            mask = Image.open(io.BytesIO(data)).convert("RGBA")
            rgba.putalpha(mask.getchannel("A"))
            rgba.save(target, compress_level=4, pnginfo=info)

    async def view_metadata(self, request: web.Request) -> web.Response:
        filename = request.rel_url.query.get("filename")
        if not filename or not filename.endswith(".safetensors"):
            return web.Response(status=404)
        path = _inside(self.folders.model_dir(request.match_info["folder_name"]), filename)
        if path is None or not await asyncio.to_thread(path.is_file):
            return web.Response(status=404)
        header = await asyncio.to_thread(_safetensors_header, path)
        if header is None or "__metadata__" not in header:
            return web.Response(status=404)
        return web.json_response(header["__metadata__"])

    # -- catalogue, models, system ----------------------------------------------------------

    async def object_info(self, request: web.Request) -> web.Response:
        return web.json_response(self.catalog())

    async def object_info_node(self, request: web.Request) -> web.Response:
        node_class = request.match_info["node_class"]
        catalog = self.catalog()
        return web.json_response({node_class: catalog[node_class]} if node_class in catalog else {})

    async def embeddings(self, request: web.Request) -> web.Response:
        return web.json_response(
            [os.path.splitext(n)[0] for n in self.folders.model_files("embeddings")]
        )

    async def model_types(self, request: web.Request) -> web.Response:
        return web.json_response(list(cat.MODEL_FOLDERS))

    async def models(self, request: web.Request) -> web.Response:
        folder = request.match_info["folder"]
        if folder not in cat.MODEL_FOLDERS:
            return web.Response(status=404)
        return web.json_response(self.folders.model_files(folder))

    async def experiment_models(self, request: web.Request) -> web.Response:
        return web.json_response(
            [
                {"name": f, "folders": [str(self.folders.model_dir(f))]}
                for f in cat.MODEL_FOLDERS
                if f not in ("configs", "custom_nodes")
            ]
        )

    async def experiment_model_files(self, request: web.Request) -> web.Response:
        folder = request.match_info["folder"]
        if folder not in cat.MODEL_FOLDERS:
            return web.Response(status=404)
        entries = []
        for name in self.folders.model_files(folder):
            stat = (self.folders.model_dir(folder) / name).stat()
            entries.append(
                {
                    "name": name,
                    "pathIndex": 0,
                    "modified": stat.st_mtime,
                    "created": stat.st_ctime,
                    "size": stat.st_size,
                }
            )
        return web.json_response(entries)

    async def system_stats(self, request: web.Request) -> web.Response:
        ram_total, ram_free = _memory()
        devices = self.devices or [
            {
                "name": "cpu",
                "type": "cpu",
                "index": None,
                "vram_total": ram_total,
                "vram_free": ram_free,
                "torch_vram_total": ram_total,
                "torch_vram_free": ram_free,
            }
        ]
        return web.json_response(
            {
                "system": {
                    "os": os.name,
                    "ram_total": ram_total,
                    "ram_free": ram_free,
                    "comfyui_version": COMFYUI_VERSION,
                    "required_frontend_version": FRONTEND_VERSION,
                    "installed_templates_version": TEMPLATES_VERSION,
                    "required_templates_version": TEMPLATES_VERSION,
                    "python_version": sys.version,
                    "pytorch_version": "2.13.0+cpu",
                    "embedded_python": False,
                    "argv": self.argv,
                },
                "devices": devices,
            }
        )

    async def features(self, request: web.Request) -> web.Response:
        return web.json_response(dict(SERVER_FEATURES))

    async def index(self, request: web.Request) -> web.Response:
        return web.Response(
            body=INDEX_HTML.encode(),
            headers={"Content-Type": "text/html", "Cache-Control": "no-cache"},
        )

    async def extensions(self, request: web.Request) -> web.Response:
        return web.json_response([])

    async def empty_object(self, request: web.Request) -> web.Response:
        return web.json_response({})

    # -- users, settings, userdata ----------------------------------------------------------

    async def users(self, request: web.Request) -> web.Response:
        return web.json_response({"storage": "server", "migrated": self.folders.user.exists()})

    def _settings_path(self) -> Path:
        return self.folders.user / "comfy.settings.json"

    def _read_settings(self) -> dict[str, Any]:
        path = self._settings_path()
        return json.loads(path.read_text()) if path.is_file() else {}

    def _write_settings(self, settings: dict[str, Any]) -> None:
        self.folders.user.mkdir(parents=True, exist_ok=True)
        self._settings_path().write_text(json.dumps(settings, indent=4))

    async def get_settings(self, request: web.Request) -> web.Response:
        return web.json_response(self._read_settings())

    async def get_setting(self, request: web.Request) -> web.Response:
        return web.json_response(self._read_settings().get(request.match_info["id"]))

    async def post_settings(self, request: web.Request) -> web.Response:
        settings = self._read_settings()
        settings.update(await request.json())
        self._write_settings(settings)
        return web.Response(status=200)

    async def post_setting(self, request: web.Request) -> web.Response:
        setting_id = request.match_info["id"]
        if not setting_id:
            return web.Response(status=400)
        settings = self._read_settings()
        settings[setting_id] = await request.json()
        self._write_settings(settings)
        return web.Response(status=200)

    def _user_path(self, relative: str) -> Path | None:
        root = os.path.abspath(self.folders.user)
        path = os.path.abspath(os.path.join(root, urllib.parse.unquote(relative)))
        return Path(path) if os.path.commonpath((root, path)) == root else None

    async def list_userdata(self, request: web.Request) -> web.Response:
        directory = request.rel_url.query.get("dir", "")
        if not directory:
            return web.Response(status=400, text="Directory not provided")
        path = self._user_path(directory)
        if path is None:
            return web.Response(status=403, text="Invalid directory")
        if not path.exists():
            return web.Response(status=404, text="Directory not found")
        recurse = request.rel_url.query.get("recurse", "").lower() == "true"
        return web.json_response(await asyncio.to_thread(_list_files, path, recurse))

    async def get_userdata(self, request: web.Request) -> web.StreamResponse:
        path = self._user_path(request.match_info["file"])
        if path is None:
            return web.Response(status=403)
        if not path.is_file():
            return web.Response(status=404)
        return web.FileResponse(path)

    async def post_userdata(self, request: web.Request) -> web.Response:
        relative = request.match_info["file"]
        path = self._user_path(relative)
        if path is None:
            return web.Response(status=403)
        if request.query.get("overwrite", "true") == "false" and path.exists():
            return web.Response(status=409, text="File already exists")
        body = await request.read()
        path.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(path.write_bytes, body)
        return web.json_response(path.relative_to(self.folders.user).as_posix())

    async def delete_userdata(self, request: web.Request) -> web.Response:
        path = self._user_path(request.match_info["file"])
        if path is None:
            return web.Response(status=403)
        if not path.exists():
            return web.Response(status=404)
        path.unlink()
        return web.Response(status=204)

    # -- /internal ----------------------------------------------------------------------------

    async def internal_logs(self, request: web.Request) -> web.Response:
        return web.json_response("")

    async def internal_logs_raw(self, request: web.Request) -> web.Response:
        return web.json_response({"entries": [], "size": {"cols": 80, "rows": 24}})

    async def internal_folder_paths(self, request: web.Request) -> web.Response:
        return web.json_response({f: [str(self.folders.model_dir(f))] for f in cat.MODEL_FOLDERS})

    async def internal_files(self, request: web.Request) -> web.Response:
        base = self.folders.by_type(request.match_info["directory_type"])
        if base is None:
            return web.json_response({"error": "Invalid directory type"}, status=400)
        files = sorted(
            (e for e in os.scandir(base) if e.is_file()),
            key=lambda e: e.stat().st_mtime,
            reverse=True,
        )
        return web.json_response([e.name for e in files])

    # -- debug routes (process mode only; not ComfyUI's) ---------------------------------------

    async def debug_stats(self, request: web.Request) -> web.Response:
        stats = self.executor.stats
        return web.json_response(
            {
                "busy_s": stats.busy_s,
                "prompts_run": stats.prompts_run,
                "prompts_failed": stats.prompts_failed,
                "wall_s": stats.wall_s,
            }
        )

    async def debug_fail_next(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.executor.fail_next(
            body["target"],
            body.get("exception_type", "RuntimeError"),
            body.get("message", "injected failure"),
        )
        return web.Response(status=204)

    async def debug_quiet(self, request: web.Request) -> web.Response:
        self.hub.quiet = bool((await request.json()).get("quiet", True))
        return web.Response(status=204)


@web.middleware
async def _origin_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """ComfyUI's guard: a loopback Host with a different Origin gets 403."""
    host, origin = request.headers.get("Host"), request.headers.get("Origin")
    if host and origin:
        host_parts = urllib.parse.urlsplit("//" + host.lower())
        origin_parts = urllib.parse.urlparse(origin)
        host_domain = host.lower() if origin_parts.port is not None else host_parts.hostname
        origin_domain = (
            origin_parts.netloc.lower() if host_parts.port is not None else origin_parts.hostname
        )
        loopback = host_parts.hostname in ("localhost", "127.0.0.1", "::1")
        if loopback and host_domain and origin_domain and host_domain != origin_domain:
            return web.Response(status=403)
    return await handler(request)


def _member(body: Any, key: str) -> Any:
    """`body[key]` if present; ComfyUI tests membership, so a JSON list body has no keys."""
    return body.get(key) if isinstance(body, dict) else None


def _inside(base: Path, relative: str) -> Path | None:
    """`base / relative`, or None if that leaves `base` (ComfyUI's commonpath checks)."""
    root = os.path.abspath(base)
    path = os.path.abspath(os.path.join(root, os.path.normpath(relative) if relative else ""))
    return Path(path) if os.path.commonpath((root, path)) == root else None


def _list_files(path: Path, recurse: bool) -> list[str]:
    """`/userdata?dir=`: the files under `path`, relative, posix."""
    pattern = (
        os.path.join(glob.escape(str(path)), "**", "*")
        if recurse
        else os.path.join(glob.escape(str(path)), "*")
    )
    return [
        os.path.relpath(p, path).replace(os.sep, "/")
        for p in glob.glob(pattern, recursive=recurse)
        if os.path.isfile(p)
    ]


def _place_upload(folder: Path, filename: str, data: bytes, overwrite: bool) -> tuple[str, bool]:
    """ComfyUI's naming: keep an identical file, else rename to `name (1).ext`, `name (2).ext`."""
    folder.mkdir(parents=True, exist_ok=True)
    if overwrite:
        return filename, False
    stem, extension = os.path.splitext(filename)
    name, counter = filename, 1
    while (folder / name).exists():
        if (folder / name).read_bytes() == data:
            return name, True
        name = f"{stem} ({counter}){extension}"
        counter += 1
    return name, False


def _render_view(path: Path, preview: str | None, channel: str) -> tuple[bytes, str]:
    """`/view` with `preview=fmt;quality` or `channel=rgb|a`."""
    buffer = io.BytesIO()
    with Image.open(path) as img:
        if preview is not None:
            parts = preview.split(";")
            image_format = (
                parts[0] if parts[0] in ("webp", "jpeg") and "a" not in channel else "webp"
            )
            quality = int(parts[-1]) if parts[-1].isdigit() else 90
            if image_format == "jpeg" or channel == "rgb":
                img = img.convert("RGB")
            img.save(buffer, format=image_format, quality=quality)
            return buffer.getvalue(), f"image/{image_format}"
        if channel == "rgb":
            (
                Image.merge("RGB", img.split()[:3]) if img.mode == "RGBA" else img.convert("RGB")
            ).save(buffer, "PNG")
        else:
            alpha = img.split()[3] if img.mode == "RGBA" else Image.new("L", img.size, 255)
            out = Image.new("RGBA", img.size)
            out.putalpha(alpha)
            out.save(buffer, "PNG")
    return buffer.getvalue(), "image/png"


def _safetensors_header(path: Path) -> dict | None:
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            return None
        (length,) = struct.unpack("<Q", raw)
        if length > 1024 * 1024:
            return None
        return json.loads(f.read(length))


def _memory() -> tuple[int, int]:
    """Total and available RAM in bytes."""
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        return int(info["MemTotal"].split()[0]) * 1024, int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return 0, 0
