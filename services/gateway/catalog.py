"""The pool's node catalogue (the queue's `GET /api/catalog`), cached by ETag, and each
participant's view of it: every upload widget lists that participant's own uploads.

The catalogue is ~0.5 MB of JSON that changes only when a worker with other nodes or models
registers, and every page load and every prompt needs it: one copy per replica, re-checked
with `If-None-Match` at most every few seconds (a 304 costs the queue nothing)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from services.comfy import catalog as cat
from services.gateway.queue_client import QueueClient, QueueRefused, QueueUnavailable


class Catalog:
    def __init__(self, queue: QueueClient, check_s: float) -> None:
        self.queue = queue
        self.check_s = check_s
        self.nodes: cat.Catalog = {}
        self.etag: str | None = None
        self._checked = 0.0
        self._lock = asyncio.Lock()
        self._uploads: list[cat.FileInput] = []

    async def current(self, token: str) -> cat.Catalog:
        """The pool catalogue ({} while no worker ever reported one)."""
        if time.monotonic() - self._checked < self.check_s and self.etag is not None:
            return self.nodes
        async with self._lock:
            if time.monotonic() - self._checked < self.check_s and self.etag is not None:
                return self.nodes
            await self._refresh(token)
        return self.nodes

    async def _refresh(self, token: str) -> None:
        headers = {"If-None-Match": self.etag} if self.etag else {}
        try:
            response = await self.queue.call("GET", "/api/catalog", token, headers=headers)
        except QueueUnavailable:
            if self.etag is None:
                raise
            return  # keep serving the last known catalogue
        if response.status_code == 200:
            nodes = await asyncio.to_thread(orjson.loads, response.content)
            self.nodes, self.etag = nodes, response.headers.get("ETag", "")
            self._uploads = cat.upload_inputs(nodes)
        elif response.status_code == 404:
            self.nodes, self.etag = {}, None
        elif response.status_code != 304:
            raise QueueRefused(response.status_code, response.text[:200])
        self._checked = time.monotonic()

    def for_participant(self, nodes: cat.Catalog, uploads: list[str]) -> cat.Catalog:
        """`nodes` with every upload widget listing `uploads` (the participant's own files).
        Only the classes with upload widgets are copied; the rest is shared."""
        touched = {item.class_type for item in cat.upload_inputs(nodes)}
        if not touched:
            return nodes
        patched = cat.with_file_lists(
            {name: nodes[name] for name in touched},
            lambda item: (
                cat.files_for_upload_flag(item.kind, uploads)
                if not item.kind.startswith("model:")
                else None
            ),
        )
        return {**nodes, **patched}


def upload_names(keys: list[str], prefix: str) -> tuple[list[str], set[str]]:
    """A participant's uploads as ComfyUI sees its input folder: the combo lists the files at
    its top level (`name`); a prompt may name any file, `sub/name` too."""
    names = {key.removeprefix(prefix) for key in keys if key.startswith(prefix)}
    return sorted(n for n in names if "/" not in n), names


def to_json(value: Any) -> bytes:
    return orjson.dumps(value)
