"""ComfyUI's messages about a job to the queue's event stream, in ComfyUI's order.

One sender per job: what arrives while a request is in flight goes in the next one, so a burst
(ComfyUI sends a `progress_state` per node change) costs a few requests, not one each, and the
order is kept because only one request is ever in flight. Each answer says whether the job's
owner cancelled it. Previews are throttled here.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any

import structlog

from services.worker.comfy import Preview
from services.worker.queue import LeaseLost, QueueClient, QueueRefused, QueueUnavailable

log = structlog.get_logger(__name__)


class Relay:
    """The ordered, batching sender of one job's messages."""

    def __init__(
        self,
        queue: QueueClient,
        job_id: str,
        lease_id: str,
        on_cancel: Callable[[], None],
        on_lost: Callable[[], None],
        preview_interval_s: float = 0.5,
        retry_for_s: float = 30.0,
    ) -> None:
        self.queue = queue
        self.job_id = job_id
        self.lease_id = lease_id
        self.on_cancel = on_cancel
        self.on_lost = on_lost
        self.preview_interval_s = preview_interval_s
        self.retry_for_s = retry_for_s
        self.sent = 0
        self.requests = 0
        self._pending: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._last_preview = float("-inf")
        self._closed = False

    def send(self, type_: str, data: Any) -> None:
        """Queue one message (ComfyUI's type and data) behind the ones before it."""
        if self._closed:
            return
        self._pending.append({"type": type_, "data": data})
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name=f"relay-{self.job_id}")

    def preview(self, frame: Preview) -> None:
        """A preview frame, unless one went out less than `preview_interval_s` ago."""
        now = asyncio.get_running_loop().time()
        if now - self._last_preview < self.preview_interval_s:
            return
        self._last_preview = now
        image = base64.b64encode(frame.image).decode()
        self.send("preview", {"format": frame.format, "image": image})

    async def flush(self) -> None:
        """Until everything queued so far has been sent (or given up on)."""
        while self._task is not None and not self._task.done():
            await asyncio.wait([self._task])

    def close(self) -> None:
        """Send nothing more (the job was lost or handed back)."""
        self._closed = True
        self._pending.clear()
        if self._task is not None:
            self._task.cancel()

    async def _drain(self) -> None:
        while self._pending and not self._closed:
            batch, self._pending = self._pending, []
            try:
                cancel = await self.queue.retrying(
                    lambda b=batch: self.queue.relay(self.job_id, self.lease_id, b),  # type: ignore[misc]
                    self.retry_for_s,
                )
            except LeaseLost:
                log.warning("lease lost while relaying", job=self.job_id)
                self._closed = True
                self.on_lost()
                return
            except (QueueUnavailable, QueueRefused) as exc:
                log.error("messages not relayed", job=self.job_id, count=len(batch), error=str(exc))
                continue
            self.sent += len(batch)
            self.requests += 1
            if cancel:
                self.on_cancel()

