"""The calls every job makes (submit, lease, complete), served without FastAPI's per-request
machinery.

FastAPI resolves dependencies, wraps the request in several layers and re-validates responses:
about 0.19 ms of CPU per call on the benchmark machine, against 0.06 ms for the bare ASGI
server. That is more than the Redis work behind these calls, and each runs once per job. So
the app answers them before any of FastAPI's layers, calling the very same endpoint functions
with the same pydantic models (validated straight from the raw JSON by pydantic-core), the
same auth dependencies and the same error bodies. FastAPI still declares these routes: they
appear in OpenAPI, and everything not listed here is served by FastAPI as usual.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from pydantic import BaseModel, ValidationError
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from services.queue.api.errors import INTERNAL, STORAGE_DOWN, validation_error
from services.queue.auth import Principal
from services.queue.limits import check_json_body, read_body

log = structlog.get_logger(__name__)

Endpoint = Callable[..., Awaitable[Any]]
Guard = Callable[[Request], Awaitable[Principal]]

_PARAM = re.compile(r"\{(\w+)\}")


def _path_regex(path: str) -> re.Pattern[str]:
    """``/a/{x}/b`` -> ``^/a/(?P<x>[^/]+)/b$``, literal parts escaped."""
    parts, pos = [], 0
    for m in _PARAM.finditer(path):
        parts += [re.escape(path[pos : m.start()]), f"(?P<{m[1]}>[^/]+)"]
        pos = m.end()
    return re.compile("^" + "".join(parts) + re.escape(path[pos:]) + "$")


@dataclass(frozen=True)
class HotRoute:
    """One endpoint on the hot path, called as
    ``endpoint(body=<body model>, who=<guard's principal>, ctx=<QueueContext>, **path_params)``."""

    method: str
    path: str
    endpoint: Endpoint
    body: type[BaseModel]
    guard: Guard
    status_code: int = 200
    regex: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regex", _path_regex(self.path))
        wanted = {"body", "who", "ctx", *self.regex.groupindex}
        params = set(inspect.signature(self.endpoint).parameters)
        if params != wanted:
            name = self.endpoint.__name__
            raise TypeError(f"{name} takes {params}; the hot path passes {wanted}")


class HotPath:
    """Matches and answers the hot routes; the app calls it before FastAPI's own layers."""

    def __init__(self, routes: Sequence[HotRoute], max_body_bytes: int) -> None:
        self._static = {(r.method, r.path): r for r in routes if not r.regex.groupindex}
        self._patterned = [r for r in routes if r.regex.groupindex]
        self._max_body_bytes = max_body_bytes

    def match(self, scope: Scope) -> tuple[HotRoute, dict[str, str]] | None:
        if scope["type"] != "http":
            return None
        method, path = scope["method"], scope["path"]
        route = self._static.get((method, path))
        if route is not None:
            return route, {}
        for route in self._patterned:
            if route.method == method and (m := route.regex.match(path)):
                return route, m.groupdict()
        return None

    async def serve(
        self, found: tuple[HotRoute, dict[str, str]], scope: Scope, receive: Receive, send: Send
    ) -> None:
        route, params = found
        response = await self._respond(route, params, Request(scope, receive))
        await response(scope, receive, send)

    async def _respond(self, route: HotRoute, params: dict[str, str], request: Request) -> Response:
        try:
            raw = await read_body(request.scope, request.receive, self._max_body_bytes)
            check_json_body(raw)  # as BodySizeLimit does for every other route
            who = await route.guard(request)
            if not raw:  # as FastAPI answers a missing required body
                return JSONResponse({"detail": "body: Field required"}, status_code=422)
            body = route.body.model_validate_json(raw)
            result = await route.endpoint(body=body, who=who, ctx=request.app.state.ctx, **params)
        except ValidationError as exc:
            code, message = validation_error(exc.errors(include_url=False))
            return JSONResponse({"detail": message}, status_code=code)
        except HTTPException as exc:
            return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)
        except RedisError as exc:
            log.error("redis error", error=str(exc))
            return JSONResponse({"detail": STORAGE_DOWN}, status_code=503)
        except Exception:  # the one error shape, 500 included (as the app's handler)
            log.exception("unhandled error", route=route.path)
            return JSONResponse({"detail": INTERNAL}, status_code=500)
        if isinstance(result, Response):
            return result
        if result is None:
            return Response(status_code=route.status_code)
        return Response(
            result.model_dump_json(), route.status_code, media_type="application/json"
        )
