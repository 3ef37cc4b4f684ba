"""ComfyUI's HTTP API and WebSocket, as the worker uses them (ComfyUI 0.3.64; the shapes are
`services.comfy.shapes` and the traces in ../shared/comfyui).

Every way ComfyUI can be gone (connection refused or reset, a socket closed mid-answer, a
timeout) is one exception, `ComfyDown`, so the worker handles a dead ComfyUI in one place.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from services.comfy import shapes

#: Outputs are fetched in pieces of this size (a video can be hundreds of MB).
CHUNK_BYTES = 1024 * 1024


class ComfyDown(Exception):
    """ComfyUI did not answer, or its connection broke."""


class PromptRejected(Exception):
    """`POST /prompt` answered 400: ComfyUI's own `{"error", "node_errors"}` body."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body.get("error", {}).get("message", "prompt rejected"))
        self.body = body


class ComfyError(Exception):
    """ComfyUI answered with an unexpected status (a bare 500, say)."""


@dataclass(frozen=True)
class Preview:
    """A binary preview frame: the image bytes, its format, and (type-4 frames) its prompt."""

    image: bytes
    format: str  # "jpeg" | "png"
    prompt_id: str | None


_NETWORK_ERRORS = (httpx.TransportError, OSError)


def parse_preview(frame: bytes) -> Preview | None:
    """A PREVIEW_IMAGE (type 1) or PREVIEW_IMAGE_WITH_METADATA (type 4) frame; else None."""
    if len(frame) < 8:
        return None
    (kind,) = struct.unpack(">I", frame[:4])
    if kind == shapes.PREVIEW_IMAGE:
        (code,) = struct.unpack(">I", frame[4:8])
        fmt = "png" if code == shapes.PREVIEW_FORMAT_CODES["PNG"] else "jpeg"
        return Preview(frame[8:], fmt, None)
    if kind == shapes.PREVIEW_IMAGE_WITH_METADATA:
        (length,) = struct.unpack(">I", frame[4:8])
        try:
            meta = json.loads(frame[8 : 8 + length])
        except ValueError:
            return None
        fmt = "png" if "png" in str(meta.get("image_type", "")) else "jpeg"
        return Preview(frame[8 + length :], fmt, meta.get("prompt_id"))
    return None


class ComfyClient:
    """One ComfyUI, at `base_url`; the worker's WebSocket identity is `client_id`."""

    def __init__(self, base_url: str, client_id: str, timeout_s: float = 30.0) -> None:
        self.base_url = base_url
        self.client_id = client_id
        self.http = httpx.AsyncClient(
            base_url=base_url, timeout=httpx.Timeout(timeout_s, connect=5.0)
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self.http.request(method, path, **kwargs)
        except _NETWORK_ERRORS as exc:
            raise ComfyDown(f"{method} {path}: {exc!r}") from exc

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        r = await self._request(method, path, **kwargs)
        if r.status_code != 200:
            raise ComfyError(f"{method} {path}: HTTP {r.status_code} {r.text[:500]}")
        return r.json()

    # -- state ------------------------------------------------------------------------------
    async def system_stats(self, timeout_s: float | None = None) -> dict[str, Any]:
        extra = {"timeout": timeout_s} if timeout_s is not None else {}
        return await self._json("GET", "/system_stats", **extra)  # type: ignore[no-any-return]

    async def object_info(self) -> bytes:
        """The node catalogue's exact bytes (hashed as they are)."""
        r = await self._request("GET", "/object_info")
        if r.status_code != 200:
            raise ComfyError(f"GET /object_info: HTTP {r.status_code}")
        return r.content

    async def models(self) -> dict[str, list[str]]:
        """Model files on disk by folder (`GET /models`, then `/models/{folder}`)."""
        folders = await self._json("GET", "/models")
        lists = await asyncio.gather(*(self._json("GET", f"/models/{f}") for f in folders))
        return {folder: list(files) for folder, files in zip(folders, lists, strict=True)}

    async def queue(self) -> tuple[set[str], set[str]]:
        """(running, pending) prompt ids."""
        body = await self._json("GET", "/queue")
        return (
            {entry[1] for entry in body.get("queue_running", [])},
            {entry[1] for entry in body.get("queue_pending", [])},
        )

    async def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The prompt's history entry, once ComfyUI finished it."""
        body = await self._json("GET", f"/history/{quote(prompt_id, safe='')}")
        entry = body.get(prompt_id) if isinstance(body, dict) else None
        return entry if isinstance(entry, dict) else None

    # -- prompts ----------------------------------------------------------------------------
    async def submit(
        self, prompt: dict[str, Any], prompt_id: str, extra_data: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Queue a prompt under `prompt_id`, its messages to this worker's socket. Raises
        PromptRejected with ComfyUI's body on 400."""
        body: dict[str, Any] = {
            "prompt": prompt, "prompt_id": prompt_id, "client_id": self.client_id,
        }  # fmt: skip
        if extra_data:
            body["extra_data"] = {k: v for k, v in extra_data.items() if k != "client_id"}
        r = await self._request("POST", "/prompt", json=body)
        if r.status_code == 400:
            raise PromptRejected(r.json())
        if r.status_code != 200:
            raise ComfyError(f"POST /prompt: HTTP {r.status_code} {r.text[:500]}")
        return r.json()  # type: ignore[no-any-return]

    async def interrupt(self, prompt_id: str) -> None:
        """Stop `prompt_id` if it is the running one (ComfyUI ignores it otherwise)."""
        await self._request("POST", "/interrupt", json={"prompt_id": prompt_id})

    async def delete_pending(self, prompt_id: str) -> None:
        await self._request("POST", "/queue", json={"delete": [prompt_id]})

    async def delete_history(self, prompt_id: str) -> None:
        await self._request("POST", "/history", json={"delete": [prompt_id]})

    # -- files ------------------------------------------------------------------------------
    async def upload(self, data: bytes, filename: str, subfolder: str) -> dict[str, Any]:
        """Put a file into ComfyUI's input folder (`/upload/image` takes any file)."""
        r = await self._request(
            "POST",
            "/upload/image",
            files={"image": (filename, data)},
            data={"subfolder": subfolder, "type": "input", "overwrite": "true"},
        )
        if r.status_code != 200:
            raise ComfyError(f"POST /upload/image: HTTP {r.status_code} {r.text[:200]}")
        return r.json()  # type: ignore[no-any-return]

    async def download(self, filename: str, subfolder: str, file_type: str, target: Path) -> bool:
        """Stream a file from `/view` into `target`; False if ComfyUI has no such file."""
        params = {"filename": filename, "subfolder": subfolder, "type": file_type}
        try:
            async with self.http.stream("GET", "/view", params=params) as r:
                if r.status_code == 404:
                    return False
                if r.status_code != 200:
                    raise ComfyError(f"GET /view {params}: HTTP {r.status_code}")
                handle = await asyncio.to_thread(target.open, "wb")
                try:
                    async for chunk in r.aiter_bytes(CHUNK_BYTES):
                        await asyncio.to_thread(handle.write, chunk)
                finally:
                    await asyncio.to_thread(handle.close)
        except _NETWORK_ERRORS as exc:
            raise ComfyDown(f"GET /view: {exc!r}") from exc
        return True

    # -- the WebSocket ----------------------------------------------------------------------
    async def messages(self, previews: bool) -> AsyncIterator[dict[str, Any] | Preview]:
        """ComfyUI's messages to this worker, until the socket closes (then ComfyDown).
        With `previews`, the worker asks for type-4 frames, which name their prompt."""
        url = "ws" + self.base_url.removeprefix("http") + f"/ws?clientId={quote(self.client_id)}"
        try:
            async with connect(url, max_size=64 * 1024 * 1024, open_timeout=5) as ws:
                if previews:
                    flags = {"supports_preview_metadata": True}
                    await ws.send(json.dumps({"type": "feature_flags", "data": flags}))
                async for frame in ws:
                    if isinstance(frame, bytes):
                        preview = parse_preview(frame)
                        if preview is not None:
                            yield preview
                        continue
                    try:
                        message = json.loads(frame)
                    except ValueError:
                        continue
                    if isinstance(message, dict):
                        yield message
        except (WebSocketException, *_NETWORK_ERRORS, TimeoutError) as exc:
            raise ComfyDown(f"WebSocket: {exc!r}") from exc
        raise ComfyDown("WebSocket closed")
