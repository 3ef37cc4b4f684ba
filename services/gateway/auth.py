"""Who is calling: HTTP Basic (the browser's own prompt), a bearer token, or the session
cookie, each checked by the queue once and then trusted for a few minutes.

The gateway keeps no passwords: Basic credentials are exchanged for a queue session token
(`POST /api/auth/token`), and that token is what every later call to the queue carries. A
page load makes dozens of requests; only the first of them costs a password check. The cache
is keyed by a hash of the credentials, so it never holds a password, and a wrong password is
never cached. The cookie holds the queue token itself (HttpOnly), so any replica can use it:
the frontend requests a few paths outside /userNNN/ (FRONTEND.md), where the browser sends
no Basic credentials.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass

from services.contracts import Role
from services.gateway.queue_client import QueueClient, QueueRefused

COOKIE = "comfy_workshop"
#: The cache never grows past this; junk credentials must not fill the memory.
_MAX_CACHED = 10_000


@dataclass(frozen=True)
class Caller:
    """An authenticated person and the queue token that acts for them."""

    user: str
    role: Role
    token: str

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def may_enter(self, space: str) -> bool:
        """A participant enters their own space; the admin every space."""
        return self.is_admin or self.user == space


class Unauthorized(Exception):
    """Missing or wrong credentials (answered 401 with a Basic challenge)."""


class Authenticator:
    def __init__(self, queue: QueueClient, cache_s: float) -> None:
        self.queue = queue
        self.cache_s = cache_s
        self._cache: dict[bytes, tuple[Caller, float]] = {}
        self._signing_in: dict[bytes, asyncio.Future[Caller]] = {}

    def _cached(self, key: bytes) -> Caller | None:
        hit = self._cache.get(key)
        if hit is None:
            return None
        if hit[1] <= time.monotonic():
            del self._cache[key]
            return None
        return hit[0]

    def forget(self, token: str) -> None:
        """The queue refused this caller's token (their password was reset, or they were
        disabled): their cached credentials go too, so the next request asks the queue again
        and the browser is challenged, instead of working on for `cache_s`."""
        for key in [k for k, (caller, _) in self._cache.items() if caller.token == token]:
            del self._cache[key]

    def _remember(self, key: bytes, caller: Caller) -> None:
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()
        self._cache[key] = (caller, time.monotonic() + self.cache_s)

    async def authenticate(
        self, headers: Mapping[str, str], cookies: Mapping[str, str], client: str
    ) -> Caller:
        """The caller of a request: its Authorization header (Basic or Bearer), else its
        session cookie. Raises Unauthorized."""
        authorization = headers.get("authorization")
        if authorization:
            scheme, _, credentials = authorization.partition(" ")
            if scheme.lower() == "basic":
                return await self._basic(credentials.strip(), _forwarded_for(headers, client))
            if scheme.lower() == "bearer":
                return await self._token(credentials.strip())
            raise Unauthorized(f"unsupported authorization scheme {scheme!r}")
        token = cookies.get(COOKIE)
        if token:
            return await self._token(token)
        raise Unauthorized("sign in with your workshop user name and password")

    async def _basic(self, credentials: str, forwarded_for: str) -> Caller:
        key = hashlib.sha256(b"basic\0" + credentials.encode()).digest()
        cached = self._cached(key)
        if cached is not None:
            return cached
        # Requests that arrive together with credentials not cached yet share one check.
        pending = self._signing_in.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._sign_in(key, credentials, forwarded_for))
            self._signing_in[key] = pending
            pending.add_done_callback(lambda _: self._signing_in.pop(key, None))
        return await asyncio.shield(pending)

    async def _sign_in(self, key: bytes, credentials: str, forwarded_for: str) -> Caller:
        try:
            username, sep, password = (
                base64.b64decode(credentials, validate=True).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise Unauthorized("malformed basic credentials") from exc
        if not sep or not username:
            raise Unauthorized("malformed basic credentials")
        try:
            token, role = await self.queue.login(username, password, forwarded_for)
        except QueueRefused as exc:
            if exc.status in (400, 401, 403, 422):
                raise Unauthorized("wrong user name or password") from exc
            raise
        caller = Caller(username, role, token)
        self._remember(key, caller)
        return caller

    async def _token(self, token: str) -> Caller:
        key = hashlib.sha256(b"token\0" + token.encode()).digest()
        cached = self._cached(key)
        if cached is not None:
            return cached
        try:
            user, role = await self.queue.me(token)
        except QueueRefused as exc:
            if exc.status in (401, 403):
                raise Unauthorized("session expired: sign in again") from exc
            raise
        caller = Caller(user, role, token)
        self._remember(key, caller)
        return caller


def _forwarded_for(headers: Mapping[str, str], client: str) -> str:
    """The X-Forwarded-For chain to pass on: what reached us, plus the peer we saw."""
    chain = headers.get("x-forwarded-for", "").strip()
    return f"{chain}, {client}" if chain else client
