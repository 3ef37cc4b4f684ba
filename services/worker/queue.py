"""The queue's worker protocol (`/api/worker/*`, docs/architecture.md) as the worker speaks it.

A 409 means the lease is gone (expired, released, the job ended): `LeaseLost`, and the job's
result is dropped. The queue being unreachable (a redeploy, a network blip) is
`QueueUnavailable`; reports are retried with capped backoff, since a job's result must not be
lost to a blip. A report whose answer was lost and that is sent again gets a 409: it was
recorded the first time.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import structlog

from services.worker.supervisor import Backoff

log = structlog.get_logger(__name__)

T = TypeVar("T")


class LeaseLost(Exception):
    """The queue refused the call with 409: this worker no longer holds the job."""


class QueueUnavailable(Exception):
    """The queue did not answer (or answered 5xx)."""


class QueueRefused(Exception):
    """A 4xx other than 409: a bug on one side; the message is the queue's `detail`."""


class QueueClient:
    """One worker's calls; `ok_at` is the Unix time of the last call the queue answered."""

    def __init__(self, base_url: str, token: str, worker_id: str = "") -> None:
        self.http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(30.0, connect=5.0),
        )
        self.worker_id = worker_id
        self.ok_at: float | None = None
        self._reachable = True

    async def aclose(self) -> None:
        await self.http.aclose()

    async def call(
        self, method: str, path: str, timeout_s: float | None = None, **kwargs: Any
    ) -> Any:
        """One request; the decoded answer (None for 204)."""
        extra = {"timeout": timeout_s} if timeout_s is not None else {}
        try:
            r = await self.http.request(method, path, **kwargs, **extra)
        except (httpx.TransportError, OSError) as exc:
            self._unreachable(f"{exc!r}")
            raise QueueUnavailable(f"{method} {path}: {exc!r}") from exc
        if r.status_code >= 500:
            self._unreachable(f"HTTP {r.status_code}")
            raise QueueUnavailable(f"{method} {path}: HTTP {r.status_code} {r.text[:200]}")
        self.ok_at = time.time()
        if not self._reachable:
            self._reachable = True
            log.info("queue reachable again", url=str(self.http.base_url))
        if r.status_code == 409:
            raise LeaseLost(_detail(r))
        if r.status_code >= 400:
            raise QueueRefused(f"{method} {path}: HTTP {r.status_code}: {_detail(r)}")
        return r.json() if r.content else None

    def _unreachable(self, reason: str) -> None:
        if self._reachable:
            self._reachable = False
            log.warning("queue unreachable; retrying", url=str(self.http.base_url), reason=reason)

    async def retrying(self, make: Callable[[], Awaitable[T]], deadline_s: float | None) -> T:
        """`make()` until the queue answers (QueueUnavailable retried with capped backoff,
        until `deadline_s` if given)."""
        backoff = Backoff(first_s=0.1, cap_s=5.0)
        loop = asyncio.get_running_loop()
        give_up = None if deadline_s is None else loop.time() + deadline_s
        while True:
            try:
                return await make()
            except QueueUnavailable:
                delay = backoff.delay()
                if give_up is not None and loop.time() + delay > give_up:
                    raise
                await asyncio.sleep(delay)  # backoff between retries, capped

    # -- the protocol -------------------------------------------------------------------------
    async def register(self, body: dict[str, Any]) -> dict[str, Any]:
        answer = await self.call("POST", "/api/worker/register", json=body)
        self.worker_id = answer["worker_id"]
        return answer  # type: ignore[no-any-return]

    async def put_catalog(self, digest: str, raw: bytes) -> None:
        body = await asyncio.to_thread(gzip.compress, raw, 6)
        await self.call(
            "PUT", f"/api/worker/catalog/{digest}", content=body,
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )  # fmt: skip

    async def lease(
        self, wait_s: float, prefetch: bool, complete: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        body = {"worker_id": self.worker_id, "wait_s": wait_s, "prefetch": prefetch,
                "complete": complete}  # fmt: skip
        return await self.call(  # type: ignore[no-any-return]
            "POST", "/api/worker/lease", json=body, timeout_s=wait_s + 30
        )

    async def heartbeat(
        self,
        leases: list[tuple[str, str]],
        status: dict[str, Any],
        wait_s: float = 0,
        cancelling: list[str] | None = None,
    ) -> dict[str, Any]:
        body = {
            "worker_id": self.worker_id, "status": status, "wait_s": wait_s,
            "cancelling": cancelling or [],
            "leases": [{"job_id": j, "lease_id": lease} for j, lease in leases],
        }  # fmt: skip
        return await self.call(  # type: ignore[no-any-return]
            "POST", "/api/worker/heartbeat", json=body, timeout_s=wait_s + 30
        )

    async def job_call(self, job_id: str, action: str, lease_id: str, **body: Any) -> Any:
        return await self.call(
            "POST", f"/api/worker/jobs/{job_id}/{action}",
            json={"worker_id": self.worker_id, "lease_id": lease_id, **body},
        )  # fmt: skip

    async def relay(self, job_id: str, lease_id: str, messages: list[dict[str, Any]]) -> bool:
        answer = await self.job_call(job_id, "events", lease_id, messages=messages)
        return bool(answer["cancel"])

    async def release(self) -> int:
        answer = await self.call("POST", "/api/worker/release", json={"worker_id": self.worker_id})
        return int(answer["released"])


def _detail(r: httpx.Response) -> str:
    try:
        return str(r.json().get("detail"))
    except ValueError:
        return r.text[:200]
