"""Login, liveness, readiness, metrics, and the event WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import re

from fastapi import (
    APIRouter,
    HTTPException,
    Request,
    Response,
    WebSocket,
    WebSocketDisconnect,
)
from pydantic import BaseModel
from redis.exceptions import RedisError

from services.contracts import Role
from services.queue.api.deps import Ctx
from services.queue.auth import Admin, Person, websocket_principal
from services.queue.events import EventHub
from services.queue.models import TokenRequest, TokenResponse

router = APIRouter(prefix="/api", tags=["ops"])
_EVENT_ID = re.compile(r"\d{1,20}-\d{1,20}")


class Status(BaseModel):
    status: str


class Me(BaseModel):
    id: str
    role: Role


@router.post("/auth/token", response_model=TokenResponse)
async def token(body: TokenRequest, request: Request, ctx: Ctx) -> TokenResponse:
    """Exchange a username and password for a bearer token. Failed logins are limited per
    user and per address (429 with Retry-After)."""
    access, role = await ctx.auth.login(body.username, body.password, _address(request))
    return TokenResponse(access_token=access, expires_in=ctx.settings.token_ttl_s, role=role)


def _valid_event_id(since: str) -> bool:
    """A stream id Redis accepts: two unsigned 64-bit numbers."""
    if not _EVENT_ID.fullmatch(since):
        return False
    ms, _, seq = since.partition("-")
    return int(ms) < 2**64 and int(seq) < 2**64


def _address(request: Request) -> str | None:
    """The caller's address: the last X-Forwarded-For hop when present (the gateway appends
    the participant's), else the peer. A direct caller can forge the header; the per-user
    limit and the hash gate still hold then."""
    forwarded = request.headers.get("x-forwarded-for", "")
    if forwarded.strip():
        return forwarded.rsplit(",", 1)[-1].strip() or None
    return request.client.host if request.client else None


@router.get("/me", response_model=Me)
async def me(who: Person) -> Me:
    assert who.role is not None
    return Me(id=who.id, role=who.role)


@router.get("/health", response_model=Status)
async def health() -> Status:
    """Liveness: the process answers. Public on purpose (it reveals nothing)."""
    return Status(status="ok")


@router.get("/ready", response_model=Status)
async def ready(ctx: Ctx) -> Status:
    """Readiness: Redis answers. Public on purpose, for load balancers and Docker."""
    try:
        await ctx.store.redis.ping()
    except (RedisError, OSError) as exc:
        raise HTTPException(503, f"redis unreachable: {exc}") from exc
    return Status(status="ready")


@router.get("/metrics", response_class=Response)
async def metrics(_: Admin, ctx: Ctx) -> Response:
    """Prometheus text format; scrape with an admin token."""
    return Response(await ctx.metrics.render(ctx.store), media_type="text/plain; version=0.0.4")


@router.websocket("/events")
async def events(websocket: WebSocket) -> None:
    """Live events: a participant gets their own jobs' events, an admin everyone's.
    Authenticate with an Authorization header or ?token=; resume with ?since=<event id>."""
    # Accept first so refusals carry a WebSocket close code and reason the client can read.
    await websocket.accept()
    try:
        who = await websocket_principal(websocket)
    except HTTPException as exc:
        await websocket.close(code=4401, reason=str(exc.detail))
        return
    if who.is_worker:
        await websocket.close(code=4403, reason="workers have no event stream")
        return
    hub: EventHub = websocket.app.state.ctx.hub
    since = websocket.query_params.get("since")
    if since is not None and not _valid_event_id(since):
        await websocket.close(code=4400, reason="since must be an event id like 1700000000000-0")
        return
    async with hub.subscribe(None if who.is_admin else who.id, since) as sub:
        closed = asyncio.create_task(_wait_closed(websocket))
        try:
            while True:
                getter = asyncio.create_task(sub.next())
                done, _ = await asyncio.wait({getter, closed}, return_when=asyncio.FIRST_COMPLETED)
                if closed in done:
                    getter.cancel()
                    return
                event = getter.result()
                if event is None:  # dropped for being too slow, or shutting down
                    await websocket.close(code=1013, reason="resume with ?since=")
                    return
                await websocket.send_text(event.to_json().decode())
        finally:
            closed.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await closed


async def _wait_closed(websocket: WebSocket) -> None:
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            await websocket.receive_text()
