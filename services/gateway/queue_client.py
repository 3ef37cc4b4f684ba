"""The gateway's only way to the jobs and the users: the queue's HTTP API, called with each
participant's own token (so the queue's ownership checks stay the one implementation)."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from services.contracts import Role


class QueueUnavailable(Exception):
    """The queue did not answer (down, restarting, or unreachable)."""


class QueueRefused(Exception):
    """The queue answered with an error status: `status` and its `detail`."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


class QueueClient:
    """One connection pool to the queue for every participant; each call carries the
    caller's bearer token."""

    def __init__(self, base_url: str, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url
        self.http = httpx.AsyncClient(
            base_url=base_url,
            timeout=httpx.Timeout(30.0, connect=5.0),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
            transport=transport,
        )

    @property
    def events_url(self) -> str:
        return "ws" + self.base_url.removeprefix("http") + "/api/events"

    async def aclose(self) -> None:
        await self.http.aclose()

    async def call(
        self,
        method: str,
        path: str,
        token: str | None,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """The queue's response; connection failures raise QueueUnavailable."""
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        content = None
        if json is not None:
            content = orjson.dumps(json)
            all_headers["Content-Type"] = "application/json"
        try:
            return await self.http.request(
                method, path, content=content, params=params, headers=all_headers
            )
        except httpx.TransportError as exc:
            raise QueueUnavailable(str(exc) or type(exc).__name__) from exc

    async def json(self, method: str, path: str, token: str | None, **kwargs: Any) -> Any:
        """The parsed body of a 2xx answer; QueueRefused for any other."""
        response = await self.call(method, path, token, **kwargs)
        if response.status_code >= 400:
            raise QueueRefused(response.status_code, _detail(response))
        return response.json() if response.content else None

    async def login(self, username: str, password: str, forwarded_for: str) -> tuple[str, Role]:
        """Exchange a participant's password for a session token. The client's address is
        forwarded: the queue's per-address login limits must see participants, not us."""
        response = await self.call(
            "POST",
            "/api/auth/token",
            None,
            json={"username": username, "password": password},
            headers={"X-Forwarded-For": forwarded_for},
        )
        if response.status_code >= 400:
            raise QueueRefused(response.status_code, _detail(response))
        body = response.json()
        return body["access_token"], Role(body["role"])

    async def me(self, token: str) -> tuple[str, Role]:
        body = await self.json("GET", "/api/me", token)
        return body["id"], Role(body["role"])


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    return str(detail) if detail else response.text[:200]
