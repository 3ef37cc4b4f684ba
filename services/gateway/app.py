"""The gateway's ASGI app: every participant's ComfyUI under `/userNNN/`, one process for all.

A request to `/userNNN/...` is authenticated (Basic, bearer or the session cookie, checked by
the queue: `auth.py`), allowed only for participant NNN or the admin, and answered by the
ComfyUI route it names (`routes.py`; ComfyUI serves each both at `/x` and `/api/x`), the
WebSocket bridge (`/ws`), or the frontend's files. The frontend's few absolute root paths
(FRONTEND.md) are served too: its public assets as they are, `/api/view` and
`/api/experiment/*` for the participant the session cookie names.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import unquote, urlsplit

import structlog
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from services.contracts import RESERVED_SEGMENTS, USER_ID_SEGMENT, validate_user_id
from services.gateway import info, responses, routes
from services.gateway.auth import COOKIE, Authenticator, Caller, Unauthorized
from services.gateway.bridge import Bridge
from services.gateway.catalog import Catalog
from services.gateway.context import Gateway, Space
from services.gateway.frontend import Frontend
from services.gateway.queue_client import QueueClient, QueueRefused, QueueUnavailable
from services.gateway.requests import TooLarge
from services.gateway.settings import GatewaySettings
from services.storage import ObjectStore, open_store

log = structlog.get_logger(__name__)

#: A participant's space, `/<user id>[/...]`: any valid user id (services/contracts.py), so a
#: participant the organizer adds at runtime has one at once.
_SPACE = re.compile(rf"^/({USER_ID_SEGMENT})(/.*)?$")
#: Frontend files the page requests at the root, served without a sign-in: they are the
#: public package's files (FRONTEND.md).
ROOT_STATIC = ("/assets/", "/cursor/", "/docs/")
ROOT_API = "/api/"
#: Room for the multipart envelope around an upload of the largest allowed size.
_MULTIPART_SLACK = 64 * 1024



def _is_user_id(name: str) -> bool:
    try:
        validate_user_id(name)
    except ValueError:
        return False
    return True


class _BodyLimit:
    """Counts what a request streams in; past the limit the handler sees TooLarge."""

    def __init__(self, receive: Receive, limit: int) -> None:
        self.receive = receive
        self.limit = limit
        self.seen = 0

    async def __call__(self) -> Message:
        message = await self.receive()
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if self.seen > self.limit:
                raise TooLarge()
        return message


class GatewayApp:
    def __init__(
        self,
        settings: GatewaySettings,
        store: ObjectStore | None = None,
        models: ObjectStore | None = None,
    ) -> None:
        self.settings = settings
        self._store = store
        self._models = models
        self.gw: Gateway | None = None

    # -- lifespan -----------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Gateway]:
        s = self.settings
        queue = QueueClient(s.queue_url)
        frontend = Frontend(s.asset_cache_dir)
        gw = Gateway(
            settings=s,
            queue=queue,
            auth=Authenticator(queue, s.auth_cache_s),
            catalog=Catalog(queue, s.catalog_check_s),
            store=self._store or open_store(s.storage),
            frontend=frontend,
            bridge=Bridge(queue, s.upstream_idle_s, {}),
            models=self._models or (open_store(s.models) if s.models is not None else None),
        )
        gw.bridge.features = info.features(gw)
        precompress = None
        if s.precompress:
            import asyncio

            precompress = asyncio.create_task(frontend.precompress_in_background())
        self.gw = gw
        log.info("gateway started", queue=s.queue_url, frontend=frontend.version)
        try:
            yield gw
        finally:
            if precompress is not None:
                precompress.cancel()
            await gw.bridge.stop()
            await queue.aclose()
            self.gw = None

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        assert message["type"] == "lifespan.startup"
        try:
            async with self.running():
                await send({"type": "lifespan.startup.complete"})
                message = await receive()
                assert message["type"] == "lifespan.shutdown"
        except Exception as exc:
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            raise
        await send({"type": "lifespan.shutdown.complete"})

    # -- requests -----------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        gw = self.gw
        assert gw is not None, "the gateway is not started (lifespan)"
        path: str = scope["path"]
        raw = (scope.get("raw_path") or path.encode()).decode("latin-1").split("?", 1)[0]
        m = _SPACE.match(raw)
        if m is not None and m[1].lower() not in RESERVED_SEGMENTS:
            await self._space(gw, scope, receive, send, m[1], m[2])
        elif raw.startswith(ROOT_STATIC) and scope["type"] == "http":
            await self._static(gw, scope, receive, send, unquote(raw[1:]))
        elif raw.startswith(ROOT_API) and scope["type"] == "http":
            await self._root_api(gw, scope, receive, send, raw[len(ROOT_API) - 1 :])
        else:
            await self._answer(scope, receive, send, responses.http_error(404))

    async def _answer(self, scope: Scope, receive: Receive, send: Send, response: Response) -> None:
        if scope["type"] == "websocket":
            ws = WebSocket(scope, receive, send)
            if "websocket.http.response" in scope.get("extensions", {}):
                await ws.send_denial_response(response)  # the client sees the real status
            else:
                await ws.close(code=4000 + response.status_code)
            return
        await response(scope, receive, send)

    async def _static(
        self, gw: Gateway, scope: Scope, receive: Receive, send: Send, name: str
    ) -> None:
        response = gw.frontend.response(name, Request(scope, receive))
        await (response or responses.http_error(404))(scope, receive, send)

    async def _caller(self, gw: Gateway, scope: Scope) -> Caller:
        from starlette.requests import HTTPConnection

        connection = HTTPConnection(scope)
        client = scope.get("client") or ("unknown", 0)
        return await gw.auth.authenticate(connection.headers, connection.cookies, client[0])

    async def _space(
        self, gw: Gateway, scope: Scope, receive: Receive, send: Send, name: str, rest: str | None
    ) -> None:
        if rest is None:  # /userNNN: the frontend needs the slash to find its API base
            query = scope.get("query_string", b"").decode()
            target = f"/{name}/" + (f"?{query}" if query else "")
            await self._answer(scope, receive, send, RedirectResponse(target, 308))
            return
        if not _is_user_id(name):
            await self._answer(scope, receive, send, responses.http_error(404))
            return
        try:
            caller = await self._caller(gw, scope)
        except Unauthorized as exc:
            await self._answer(scope, receive, send, _unauthorized(name, str(exc)))
            return
        except QueueUnavailable:
            await self._answer(scope, receive, send, _queue_down())
            return
        except QueueRefused as exc:  # e.g. 429 after too many wrong passwords: say so
            await self._answer(scope, receive, send, _refused(exc))
            return
        if not caller.may_enter(name):
            await self._answer(
                scope, receive, send, responses.text(f"This is {name}'s ComfyUI, not yours.", 403)
            )
            return
        space = Space(name, caller)
        if scope["type"] == "websocket":
            if rest in ("/ws", "/api/ws"):
                await gw.bridge.serve(WebSocket(scope, receive, send), name, caller.token)
            else:
                await WebSocket(scope, receive, send).close(code=4404)
            return
        send = _with_cookie(send, scope, caller, gw.settings.secure_cookies)
        api_path = rest[4:] if rest.startswith("/api/") else rest
        route, path_params, other_method = routes.match(routes.ROUTES, scope["method"], api_path)
        if route is not None:
            await self._call(gw, scope, receive, send, route, space, path_params)
            return
        if other_method:
            await responses.http_error(405)(scope, receive, send)
            return
        if rest.startswith("/api/") or scope["method"] not in ("GET", "HEAD"):
            await responses.http_error(404)(scope, receive, send)
            return
        name_in_frontend = "index.html" if rest == "/" else unquote(rest[1:])
        await self._static(gw, scope, receive, send, name_in_frontend)

    async def _root_api(
        self, gw: Gateway, scope: Scope, receive: Receive, send: Send, api_path: str
    ) -> None:
        """`/api/view` and `/api/experiment/*` at the root, as the frontend requests them for
        3D previews, canvas backgrounds and model previews: the session cookie says whose."""
        route, path_params, _ = routes.match(routes.ROOT_API_ROUTES, scope["method"], api_path)
        if route is None:
            await responses.http_error(404)(scope, receive, send)
            return
        try:
            caller = await self._caller(gw, scope)
        except Unauthorized:
            await responses.text("401: Unauthorized", 401)(scope, receive, send)
            return
        except QueueUnavailable:
            await _queue_down()(scope, receive, send)
            return
        except QueueRefused as exc:
            await _refused(exc)(scope, receive, send)
            return
        name = caller.user
        if caller.is_admin:  # the admin acts in the space the page came from
            m = _SPACE.match(urlsplit(Request(scope).headers.get("referer", "")).path)
            name = m[1] if m else name
        await self._call(gw, scope, receive, send, route, Space(name, caller), path_params)

    async def _call(
        self,
        gw: Gateway,
        scope: Scope,
        receive: Receive,
        send: Send,
        route: routes.ComfyRoute,
        space: Space,
        path_params: dict[str, str],
    ) -> None:
        limit = (
            gw.settings.max_upload_bytes + _MULTIPART_SLACK
            if route.upload
            else gw.settings.max_json_bytes
        )
        declared = dict(scope.get("headers") or []).get(b"content-length", b"").strip()
        if declared.isdigit() and int(declared) > limit:
            await responses.http_error(413)(scope, receive, send)
            return
        request = Request(scope, _BodyLimit(receive, limit))
        try:
            response = await route.handler(request, gw, space, **path_params)
        except TooLarge:
            response = responses.http_error(413)
        except QueueUnavailable:
            response = _queue_down()
        except QueueRefused as exc:
            log.warning("queue refused", status=exc.status, detail=exc.detail)
            if exc.status == 401:  # the caller's session ended at the queue: sign in again
                gw.auth.forget(space.caller.token)
                response = _unauthorized(space.name, "session ended: sign in again")
            else:
                status = exc.status if 400 <= exc.status < 500 else 502
                response = responses.text(exc.detail, status)
        except Exception as exc:
            from starlette.formparsers import MultiPartException

            if not isinstance(exc, MultiPartException):
                raise
            response = responses.empty(400)
        await response(scope, receive, send)


def _unauthorized(space: str, reason: str) -> Response:
    response = responses.text("401: Unauthorized", 401)
    response.headers["WWW-Authenticate"] = f'Basic realm="ComfyUI ({space})", charset="UTF-8"'
    response.headers["X-Reason"] = reason
    return response


def _refused(exc: QueueRefused) -> Response:
    """The queue refused a sign-in for a reason other than the password (too many attempts:
    429): its reason and status, never a 500."""
    return responses.text(exc.detail, exc.status if 400 <= exc.status < 500 else 502)


def _queue_down() -> Response:
    return responses.text("The workshop queue is not reachable; try again in a moment.", 503)


def _with_cookie(send: Send, scope: Scope, caller: Caller, secure: bool) -> Send:
    """Add the session cookie to the response (the frontend's root paths need it) unless the
    request already carried it."""
    cookies = SimpleCookie()
    with contextlib.suppress(Exception):
        cookies.load(dict(scope.get("headers") or []).get(b"cookie", b"").decode("latin-1"))
    if cookies.get(COOKIE) is not None and cookies[COOKIE].value == caller.token:
        return send
    attributes = "Path=/; HttpOnly; SameSite=Lax; Max-Age=43200" + ("; Secure" if secure else "")
    cookie = f"{COOKIE}={caller.token}; {attributes}".encode()

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
        await send(message)

    return sending


def create_app(
    settings: GatewaySettings | None = None,
    store: ObjectStore | None = None,
    models: ObjectStore | None = None,
) -> Any:
    """The gateway; settings default to the GATEWAY_* environment."""
    return GatewayApp(settings or GatewaySettings(), store, models)  # type: ignore[call-arg]
