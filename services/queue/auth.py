"""Who is calling: participants and admins (passwords, then signed tokens), and workers
(one opaque token each, stored only as its SHA-256).

Password checks use argon2id (bcrypt hashes, as Pulumi's random provider makes them, are
accepted too) and run in a thread: they are deliberately slow. Every later request carries a
short-lived HS256 token, which costs microseconds to verify.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Annotated

import argon2
import bcrypt
import jwt
from fastapi import Depends, HTTPException, Request, WebSocket, status
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from services.contracts import ROLE_LEVEL, WORKER_TOKEN_PREFIX, EventType, Role
from services.queue.limits import HashGate, LoginFailures
from services.queue.settings import QueueSettings

_hasher = argon2.PasswordHasher()
_WORKER_CACHE_S = 10.0
_BASIC_CACHE_S = 60.0
#: Backstop only: a user's cached session state is dropped by the event stream at once.
_SESSION_CACHE_S = 30.0
_ROLES = frozenset(r.value for r in Role)


class LastAdmin(Exception):
    """Refused: the change would leave no enabled admin (the message says so)."""


@dataclass(frozen=True)
class UserRecord:
    """A stored user. `version` is the session version: tokens carry the one they were
    issued under, and it changes on delete, role change, password reset and disable."""

    id: str
    role: Role
    password_hash: str
    version: int
    disabled: bool


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    id: str
    role: Role | None  # None for workers
    is_worker: bool = False

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def level(self) -> int:
        return ROLE_LEVEL[self.role] if self.role else 0


#: Characters of generated passwords: no look-alikes (0/O, 1/l/I) and no '-' or '_'.
_READABLE = frozenset("abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789")


def generate_password() -> str:
    """A password to read off a printed card: three groups of four characters (about 70
    bits), drawn from `secrets.token_urlsafe` without look-alike characters."""
    chars: list[str] = []
    while len(chars) < 12:
        chars.extend(c for c in secrets.token_urlsafe(16) if c in _READABLE)
    return "-".join("".join(chars[i : i + 4]) for i in (0, 4, 8))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    """Check a password against an argon2 or bcrypt hash; never raises on a mismatch."""
    if stored_hash.startswith("$2"):
        try:
            return bcrypt.checkpw(password.encode(), stored_hash.encode())
        except ValueError:
            return False
    try:
        return _hasher.verify(stored_hash, password)
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
        return False


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}
    )


class Authenticator:
    """Users and worker tokens live in Redis so every replica sees the same ones."""

    def __init__(self, redis: Redis, settings: QueueSettings) -> None:
        self.redis = redis
        self.settings = settings
        self._secret = settings.token_secret.get_secret_value()
        self._worker_cache: dict[str, tuple[str | None, float]] = {}
        self._basic_cache: dict[bytes, float] = {}
        # Verified session tokens, until they expire: a signature check per request adds up.
        self._token_cache: dict[str, tuple[Principal, float, int]] = {}
        self._users_key = settings.key_prefix + "users"
        self._disabled_key = settings.key_prefix + "users:disabled"
        self._ver_key = settings.key_prefix + "users:ver"
        #: uid -> fingerprint of the configured declaration last applied (see `seed`).
        self._seeded_key = settings.key_prefix + "users:seeded"
        self._events_key = settings.key_prefix + "events"
        # uid -> (record or None, backstop expiry); `_epoch` counts invalidations.
        self._session_cache: dict[str, tuple[UserRecord | None, float]] = {}
        self._epoch = 0
        self._hashes = HashGate(settings.login_concurrency, settings.login_queue)
        self._failures = LoginFailures(
            redis, settings.key_prefix, settings.login_failures_per_user,
            settings.login_failures_per_address, settings.login_window_s,
        )
        self._wtokens_key = settings.key_prefix + "wtokens"

    # -- setup --------------------------------------------------------------------------
    async def seed(self) -> None:
        """Install the users and worker tokens declared in configuration. A declared user is
        written only when their declaration is new or changed since it was last applied: a
        password an admin reset, or a user an admin deleted, stays so when the queue restarts."""
        admin = self.settings.admin_password.get_secret_value()
        await self._declare("admin", Role.ADMIN, plain=admin)
        for uid, seed in self.settings.users.items():
            plain = seed.password.get_secret_value() if seed.password is not None else None
            await self._declare(uid, seed.role, seed.password_hash, plain)
        for name, token in self.settings.worker_tokens.items():
            await self.add_worker_token(name, token.get_secret_value())

    async def _declare(
        self, uid: str, role: Role, password_hash: str | None = None, plain: str | None = None
    ) -> None:
        if password_hash is None and plain is None:
            return
        # Keyed by the token secret: the fingerprint of a plain password reveals nothing.
        declared = f"{role.value}\0{password_hash or ''}\0{plain or ''}".encode()
        key = self.settings.token_secret.get_secret_value().encode()
        fingerprint = hmac.new(key, declared, hashlib.sha256).hexdigest()
        applied = await self.redis.hget(self._seeded_key, uid)
        if applied is not None and applied.decode() == fingerprint:
            return
        if password_hash is None:
            assert plain is not None
            password_hash = await asyncio.to_thread(hash_password, plain)
        await self.set_user(uid, password_hash, role)
        await self.redis.hset(self._seeded_key, uid, fingerprint)

    async def password_matches(self, uid: str, password: str) -> bool:
        """Whether `password` is the user's (False for an unknown user); hashing runs in a
        thread."""
        record = await self.get_user(uid)
        return record is not None and await asyncio.to_thread(
            verify_password, record[0], password
        )

    # -- users --------------------------------------------------------------------------
    # Three keys, all written in one MULTI: `users` (uid -> "<role> <password hash>"),
    # `users:disabled` (a set) and `users:ver` (uid -> session version). The version is
    # never deleted, so a user re-created under an old name does not revive old tokens.
    async def user_record(self, uid: str) -> UserRecord | None:
        """The stored user, or None if there is none."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(self._users_key, uid)
            pipe.hget(self._ver_key, uid)
            pipe.sismember(self._disabled_key, uid)
            raw, ver, disabled = await pipe.execute()
        if raw is None:
            return None
        role, password_hash = raw.decode().split(" ", 1)
        return UserRecord(uid, Role(role), password_hash, int(ver or 0), bool(disabled))

    async def set_user(self, uid: str, password_hash: str, role: Role) -> None:
        """Create a user, or replace their password hash and role. Sessions end when either
        changes (not when both stay).
        Raises LastAdmin if this would demote the only admin left."""

        async def change(pipe: Pipeline) -> None:
            old = await pipe.hget(self._users_key, uid)
            new = f"{role.value} {password_hash}"
            if old is not None and old.decode() == new:
                pipe.multi()
                return
            was_admin = old is not None and old.decode().startswith(Role.ADMIN.value + " ")
            if was_admin and role is not Role.ADMIN:
                await self._refuse_last_admin(pipe, uid, "demote")
            pipe.multi()
            pipe.hset(self._users_key, uid, new)
            if old is not None:
                self._bump(pipe, uid)

        await self.redis.transaction(change, self._users_key, self._disabled_key)

    async def create_user(self, uid: str, password_hash: str, role: Role) -> bool:
        """Create a user who does not exist yet; False (nothing changed) if one does. The
        session version is kept: tokens of an earlier user of that name stay dead."""
        return bool(await self.redis.hsetnx(self._users_key, uid, f"{role.value} {password_hash}"))

    async def reset_password(self, uid: str, password: str) -> bool:
        """Give an existing user a new password (their sessions end); False if unknown.
        Hashing is slow by design and runs in a thread."""
        record = await self.user_record(uid)
        if record is None:
            return False
        hashed = await asyncio.to_thread(hash_password, password)

        async def change(pipe: Pipeline) -> None:
            raw = await pipe.hget(self._users_key, uid)
            pipe.multi()
            if raw is not None:
                pipe.hset(self._users_key, uid, f"{raw.decode().split(' ', 1)[0]} {hashed}")
                self._bump(pipe, uid)

        await self.redis.transaction(change, self._users_key)
        return await self.redis.hexists(self._users_key, uid)

    async def set_disabled(self, uid: str, disabled: bool) -> bool:
        """Disable (or enable again) a user: a disabled user cannot log in and their tokens
        stop working at once on every replica. False if the user is unknown. Raises
        LastAdmin when disabling the only enabled admin."""

        async def change(pipe: Pipeline) -> bool:
            raw = await pipe.hget(self._users_key, uid)
            if raw is None:
                pipe.multi()
                return False
            if disabled and raw.decode().startswith(Role.ADMIN.value + " "):
                await self._refuse_last_admin(pipe, uid, "disable")
            pipe.multi()
            if disabled:
                pipe.sadd(self._disabled_key, uid)
            else:
                pipe.srem(self._disabled_key, uid)
            self._bump(pipe, uid)
            return True

        return bool(
            await self.redis.transaction(
                change, self._users_key, self._disabled_key, value_from_callable=True
            )
        )

    async def get_user(self, uid: str) -> tuple[str, Role] | None:
        record = await self.user_record(uid)
        return None if record is None else (record.password_hash, record.role)

    async def list_users(self) -> dict[str, Role]:
        raw = await self.redis.hgetall(self._users_key)
        return {k.decode(): Role(v.decode().split(" ", 1)[0]) for k, v in raw.items()}

    async def disabled_users(self) -> set[str]:
        return {m.decode() for m in await self.redis.smembers(self._disabled_key)}

    async def delete_user(self, uid: str) -> bool:
        """Delete a user; their sessions end at once. Raises LastAdmin for the only admin."""

        async def change(pipe: Pipeline) -> bool:
            raw = await pipe.hget(self._users_key, uid)
            if raw is None:
                pipe.multi()
                return False
            if raw.decode().startswith(Role.ADMIN.value + " "):
                await self._refuse_last_admin(pipe, uid, "delete")
            pipe.multi()
            pipe.hdel(self._users_key, uid)
            pipe.srem(self._disabled_key, uid)
            self._bump(pipe, uid)
            return True

        return bool(
            await self.redis.transaction(
                change, self._users_key, self._disabled_key, value_from_callable=True
            )
        )

    async def _refuse_last_admin(self, pipe: Pipeline, uid: str, action: str) -> None:
        """Inside a WATCHed transaction: raise LastAdmin if `uid` is the only enabled admin
        (two concurrent demotions cannot both pass: the second transaction is retried)."""
        users = await pipe.hgetall(self._users_key)
        disabled = {m.decode() for m in await pipe.smembers(self._disabled_key)}
        admins = {
            k.decode() for k, v in users.items()
            if v.decode().startswith(Role.ADMIN.value + " ") and k.decode() not in disabled
        }
        if admins <= {uid}:
            raise LastAdmin(
                f"cannot {action} {uid!r}: it is the last enabled admin; "
                "make another user admin first"
            )

    def _bump(self, pipe: Pipeline, uid: str) -> None:
        """Queue (inside MULTI) a session-version bump and the event that tells every
        replica to forget what it cached about `uid`."""
        pipe.hincrby(self._ver_key, uid, 1)
        pipe.xadd(
            self._events_key,
            {"type": EventType.SESSION.value, "job": "", "user": uid, "state": "", "data": "{}"},
            maxlen=self.settings.events_maxlen,
            approximate=True,
        )

    def forget(self, uid: str | None) -> None:
        """Drop cached session state for one user (None: everyone). Called by the event hub
        on a session event, and when its stream read failed (events may have been missed)."""
        self._epoch += 1
        if uid is None:
            self._session_cache.clear()
        else:
            self._session_cache.pop(uid, None)

    async def _session(self, uid: str) -> UserRecord | None:
        """The user's current record, cached until a session event for them (or a short
        backstop expiry, should an event be missed)."""
        now = time.monotonic()
        cached = self._session_cache.get(uid)
        if cached is not None and cached[1] > now:
            return cached[0]
        epoch = self._epoch
        record = await self.user_record(uid)
        if epoch == self._epoch:  # no invalidation raced with the read
            if len(self._session_cache) > 10_000:
                self._session_cache.clear()
            self._session_cache[uid] = (record, now + _SESSION_CACHE_S)
        return record

    async def login(
        self, uid: str, password: str, address: str | None = None
    ) -> tuple[str, Role]:
        """Check a password and issue a signed token; 401 with the same text either way;
        429 with Retry-After past the failure limits or when too many hash at once."""
        await self._failures.check(uid, address)
        record = await self.user_record(uid)
        # Hash even for unknown users so timing does not reveal who exists.
        stored = record.password_hash if record else _DUMMY_HASH
        ok = await self._hashes.run(verify_password, stored, password)
        if record is None or not ok:
            await self._failures.failed(uid, address)
            raise _unauthorized("wrong username or password")
        await self._failures.succeeded(uid)
        if record.disabled:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "this account is disabled")
        return self.issue_token(uid, record.role, record.version), record.role

    def issue_token(self, uid: str, role: Role, version: int = 0) -> str:
        now = int(time.time())
        ttl = self.settings.token_ttl_s
        claims = {"sub": uid, "role": role.value, "ver": version, "iat": now, "exp": now + ttl}
        return jwt.encode(claims, self._secret, algorithm="HS256")

    # -- workers ------------------------------------------------------------------------
    async def add_worker_token(self, name: str, token: str) -> None:
        digest = hashlib.sha256(token.encode()).hexdigest()
        async with self.redis.pipeline(transaction=True) as pipe:
            # One token per name: drop the name's old token first.
            for old_digest, old_name in (await self.redis.hgetall(self._wtokens_key)).items():
                if old_name.decode() == name and old_digest.decode() != digest:
                    pipe.hdel(self._wtokens_key, old_digest)
            pipe.hset(self._wtokens_key, digest, name)
            await pipe.execute()

    async def create_worker_token(self, name: str) -> str:
        token = WORKER_TOKEN_PREFIX + secrets.token_urlsafe(32)
        await self.add_worker_token(name, token)
        return token

    async def revoke_worker_token(self, name: str) -> bool:
        removed = False
        for digest, owner in (await self.redis.hgetall(self._wtokens_key)).items():
            if owner.decode() == name:
                await self.redis.hdel(self._wtokens_key, digest)
                removed = True
        self._worker_cache.clear()
        return removed

    async def _worker_name(self, token: str) -> str | None:
        """Look a worker token up; answers are cached briefly since workers call often."""
        now = time.monotonic()
        cached = self._worker_cache.get(token)
        if cached and cached[1] > now:
            return cached[0]
        digest = hashlib.sha256(token.encode()).hexdigest()
        raw = await self.redis.hget(self._wtokens_key, digest)
        name = raw.decode() if raw is not None else None
        if len(self._worker_cache) > 10_000:  # junk tokens must not grow it without bound
            self._worker_cache.clear()
        self._worker_cache[token] = (name, now + _WORKER_CACHE_S)
        return name

    # -- per request --------------------------------------------------------------------
    async def authenticate(self, authorization: str | None, query_token: str | None) -> Principal:
        """Resolve an Authorization header (Bearer or Basic), or a ?token= for WebSockets."""
        if authorization:
            scheme, _, credentials = authorization.partition(" ")
            scheme = scheme.lower()
            if scheme == "bearer":
                return await self._bearer(credentials.strip())
            if scheme == "basic":
                return await self._basic(credentials.strip())
            raise _unauthorized(f"unsupported authorization scheme {scheme!r}")
        if query_token:
            return await self._bearer(query_token)
        raise _unauthorized("authentication required: send 'Authorization: Bearer <token>'")

    async def _bearer(self, token: str) -> Principal:
        if token.startswith(WORKER_TOKEN_PREFIX):
            name = await self._worker_name(token)
            if name is None:
                raise _unauthorized("unknown or revoked worker token")
            return Principal(id=name, role=None, is_worker=True)
        cached = self._token_cache.get(token)
        if cached is not None and cached[1] > time.time():
            principal, version = cached[0], cached[2]
        else:
            principal, version, exp = self._decode(token)
            if len(self._token_cache) > 10_000:
                self._token_cache.clear()
            self._token_cache[token] = (principal, exp, version)
        record = await self._session(principal.id)
        if record is None:
            raise _unauthorized("this user no longer exists")
        if record.disabled:
            raise _unauthorized("this account is disabled")
        if record.version != version:
            raise _unauthorized("session ended (role or password changed): log in again")
        return principal

    def _decode(self, token: str) -> tuple[Principal, int, float]:
        """(principal, session version, expiry) of a signed token, or 401; a token signed
        with our secret but lacking a claim we need is refused the same way."""
        try:
            claims = jwt.decode(
                token, self._secret, algorithms=["HS256"],
                options={"require": ["sub", "exp", "role"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise _unauthorized("token expired: log in again at /api/auth/token") from exc
        except jwt.InvalidTokenError as exc:
            raise _unauthorized("invalid token") from exc
        sub, role, ver, exp = (claims.get(k) for k in ("sub", "role", "ver", "exp"))
        if (
            not isinstance(sub, str) or role not in _ROLES
            or type(ver) is not int or not isinstance(exp, int | float)
        ):
            raise _unauthorized("invalid token")
        return Principal(id=sub, role=Role(role)), ver, float(exp)

    async def _basic(self, credentials: str) -> Principal:
        """Basic auth (the gateway forwards the browser's). A password check costs tens of
        milliseconds by design, so a successful one is remembered briefly, keyed by a hash
        of the credentials together with the stored hash (a password change invalidates it)."""
        try:
            uid, _, password = (
                base64.b64decode(credentials.encode("ascii"), validate=True)
                .decode().partition(":")
            )
        except (binascii.Error, UnicodeError) as exc:
            raise _unauthorized("malformed basic credentials") from exc
        record = await self._session(uid)
        if record is None:
            raise _unauthorized("wrong username or password")
        key = hashlib.sha256(f"{uid}\0{password}\0{record.password_hash}".encode()).digest()
        now = time.monotonic()
        if self._basic_cache.get(key, 0.0) <= now:
            if not await self._hashes.run(verify_password, record.password_hash, password):
                raise _unauthorized("wrong username or password")
            if len(self._basic_cache) > 10_000:
                self._basic_cache.clear()
            self._basic_cache[key] = now + _BASIC_CACHE_S
        if record.disabled:
            raise _unauthorized("this account is disabled")
        return Principal(id=uid, role=record.role)


_DUMMY_HASH = hash_password(secrets.token_hex(8))


async def _principal(request: Request) -> Principal:
    auth: Authenticator = request.app.state.ctx.auth
    return await auth.authenticate(request.headers.get("authorization"), None)


async def require_person(request: Request) -> Principal:
    principal = await _principal(request)
    if principal.is_worker:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "worker tokens may not use this endpoint")
    return principal


async def require_admin(request: Request) -> Principal:
    principal = await _principal(request)
    if not principal.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admin only")
    return principal


async def require_authenticated(request: Request) -> Principal:
    """Any person or worker with valid credentials."""
    return await _principal(request)


async def require_worker(request: Request) -> Principal:
    principal = await _principal(request)
    if not principal.is_worker:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "worker token required")
    return principal


async def websocket_principal(websocket: WebSocket) -> Principal:
    auth: Authenticator = websocket.app.state.ctx.auth
    return await auth.authenticate(
        websocket.headers.get("authorization"), websocket.query_params.get("token")
    )


Person = Annotated[Principal, Depends(require_person)]
Admin = Annotated[Principal, Depends(require_admin)]
Worker = Annotated[Principal, Depends(require_worker)]
Anyone = Annotated[Principal, Depends(require_authenticated)]
