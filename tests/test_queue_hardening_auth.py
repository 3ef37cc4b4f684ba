"""Sessions die with their user (issue 13, defects 2-4): deletion, demotion, password reset
and disabling end a user's tokens at once on every replica; the last admin stays; malformed
credentials are 401, never 500."""

from __future__ import annotations

import asyncio
import base64
import time

import httpx
import jwt

from services.contracts import Role
from tests.queue_harness import (
    ADMIN_PASSWORD,
    PASSWORDS,
    WORKFLOW,
    MakeQueue,
    QueueHarness,
    queue_settings,
    start_queue,
)

SECRET = "test-secret-test-secret-test-secret"


async def _me(queue: QueueHarness, token: str) -> int:
    async with httpx.AsyncClient(base_url=queue.base_url, timeout=30) as client:
        r = await client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
        return r.status_code


async def _login(queue: QueueHarness, user: str, password: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=queue.base_url, timeout=30) as client:
        return await client.post("/api/auth/token", json={"username": user, "password": password})


async def test_deleting_a_user_ends_their_session_at_once(queue: QueueHarness) -> None:
    token = await queue.token("bob")
    assert await _me(queue, token) == 200  # now cached on this replica
    admin = await queue.client("admin")
    assert (await admin.delete("/api/admin/users/bob")).status_code == 204
    assert await _me(queue, token) == 401
    bob = httpx.AsyncClient(base_url=queue.base_url, headers={"Authorization": f"Bearer {token}"})
    assert (await bob.post("/api/jobs", json={"workflow": WORKFLOW})).status_code == 401
    # Re-created under the same name: the old token stays dead.
    r = await admin.put("/api/admin/users/bob", json={"password": "another-password"})
    assert r.status_code == 200
    assert await _me(queue, token) == 401
    await bob.aclose()


async def test_a_demoted_admin_loses_admin_rights(queue: QueueHarness) -> None:
    admin = await queue.client("admin")
    r = await admin.put(
        "/api/admin/users/dave", json={"password": "dave-password", "role": "admin"}
    )
    assert r.status_code == 200
    dave_token = (await _login(queue, "dave", "dave-password")).json()["access_token"]
    dave = httpx.AsyncClient(
        base_url=queue.base_url, headers={"Authorization": f"Bearer {dave_token}"}
    )
    assert (await dave.put("/api/admin/mode", json={"mode": "fifo"})).status_code == 200
    r = await admin.put(
        "/api/admin/users/dave", json={"password": "dave-password", "role": "participant"}
    )
    assert r.status_code == 200
    assert (await dave.put("/api/admin/mode", json={"mode": "fair"})).status_code == 401
    assert (await dave.post("/api/admin/worker-tokens", json={"name": "x"})).status_code == 401
    await dave.aclose()


async def test_password_reset_and_disable_end_sessions(queue: QueueHarness) -> None:
    auth = queue.app.state.ctx.auth
    token = await queue.token("alice")
    assert await _me(queue, token) == 200
    assert await auth.reset_password("alice", "new-alice-password")
    assert await _me(queue, token) == 401
    assert (await _login(queue, "alice", PASSWORDS["alice"])).status_code == 401
    r = await _login(queue, "alice", "new-alice-password")
    assert r.status_code == 200
    token = r.json()["access_token"]
    assert await _me(queue, token) == 200

    assert await auth.set_disabled("alice", True)
    assert await _me(queue, token) == 401
    r = await _login(queue, "alice", "new-alice-password")
    assert r.status_code == 403 and "disabled" in r.json()["detail"]
    basic = base64.b64encode(b"alice:new-alice-password").decode()
    async with httpx.AsyncClient(base_url=queue.base_url) as client:
        r = await client.get("/api/me", headers={"Authorization": f"Basic {basic}"})
    assert r.status_code == 401
    assert await auth.set_disabled("alice", False)
    assert (await _login(queue, "alice", "new-alice-password")).status_code == 200
    assert not await auth.set_disabled("nobody", True)
    assert not await auth.reset_password("nobody", "whatever-password")


async def test_a_restart_keeps_sessions(make_queue: MakeQueue) -> None:
    """The seed rewrites its users at every start; that must not end anyone's session."""
    async with make_queue() as queue:
        token = await queue.token("alice")
    async with make_queue() as queue:
        assert await _me(queue, token) == 200


async def test_signed_tokens_for_unknown_users_or_without_claims_are_401(
    queue: QueueHarness,
) -> None:
    exp = int(time.time()) + 600
    cases = [
        {"sub": "mallory", "role": "admin", "ver": 0, "exp": exp},  # never existed
        {"role": "admin", "ver": 0, "exp": exp},  # no sub
        {"sub": "alice", "role": "participant", "ver": 0},  # no exp
        {"sub": "alice", "role": "emperor", "ver": 0, "exp": exp},  # unknown role
        {"sub": ["alice"], "role": "participant", "ver": 0, "exp": exp},
        {"sub": "alice", "role": "participant", "ver": "0", "exp": exp},
    ]
    for claims in cases:
        token = jwt.encode(claims, SECRET, algorithm="HS256")
        assert await _me(queue, token) == 401, claims


async def test_non_ascii_basic_credentials_are_401(queue: QueueHarness) -> None:
    async with httpx.AsyncClient(base_url=queue.base_url) as client:
        for value in ["Basic éééé".encode(), b"Basic \xff\xfe", b"Basic !!!!", b"Basic YQ"]:
            r = await client.get("/api/me", headers={"Authorization": value})
            assert r.status_code == 401, value
            assert r.json()["detail"]
    from websockets.asyncio.client import connect

    async with connect(
        queue.ws_url("/api/events"), additional_headers={"Authorization": "Basic éééé"}
    ) as ws:
        async with asyncio.timeout(10):
            await ws.wait_closed()
        assert ws.close_code == 4401


async def test_the_last_admin_cannot_be_demoted_deleted_or_disabled(
    queue: QueueHarness,
) -> None:
    admin = await queue.client("admin")
    r = await admin.put(
        "/api/admin/users/admin", json={"password": ADMIN_PASSWORD, "role": "participant"}
    )
    assert r.status_code == 409 and "last enabled admin" in r.json()["detail"]
    first = (await admin.get("/api/admin/users")).json()[0]
    assert (first["id"], first["role"]) == ("admin", "admin")
    # With a second admin, the first may step down; then the second is the last one.
    r = await admin.put(
        "/api/admin/users/root", json={"password": "root-password", "role": "admin"}
    )
    assert r.status_code == 200
    r = await admin.put(
        "/api/admin/users/admin", json={"password": ADMIN_PASSWORD, "role": "participant"}
    )
    assert r.status_code == 200
    root_token = (await _login(queue, "root", "root-password")).json()["access_token"]
    root = httpx.AsyncClient(
        base_url=queue.base_url, headers={"Authorization": f"Bearer {root_token}"}
    )
    r = await root.delete("/api/admin/users/root")
    assert r.status_code == 409 and "last enabled admin" in r.json()["detail"]
    auth = queue.app.state.ctx.auth
    from services.queue.auth import LastAdmin

    try:
        await auth.set_disabled("root", True)
        raise AssertionError("disabling the last admin was allowed")
    except LastAdmin:
        pass
    users = await auth.list_users()
    assert users["root"] is Role.ADMIN and not await auth.disabled_users()
    await root.aclose()


async def test_a_second_replica_refuses_a_deleted_users_token_within_a_second(
    redis_url: str,
) -> None:
    settings = queue_settings(redis_url)
    async with start_queue(settings) as a, start_queue(settings) as b:
        token = await a.token("bob")
        assert await _me(a, token) == 200
        assert await _me(b, token) == 200  # both replicas have bob cached now
        # Observe replica b's hub delivering the session event (the real callback still runs).
        hub = b.app.state.ctx.hub
        forget, seen = hub.on_session, asyncio.Event()

        def observe(uid: str | None) -> None:
            forget(uid)
            if uid == "bob":
                seen.set()

        hub.on_session = observe
        admin = await a.client("admin")
        assert (await admin.delete("/api/admin/users/bob")).status_code == 204
        async with asyncio.timeout(1.0):  # the cache's own backstop is 30 s
            await seen.wait()
        assert await _me(b, token) == 401
        await admin.aclose()


async def _login_from(queue: QueueHarness, user: str, password: str, addr: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=queue.base_url, timeout=30) as client:
        return await client.post(
            "/api/auth/token", json={"username": user, "password": password},
            headers={"X-Forwarded-For": addr},
        )


async def test_failed_logins_are_limited_per_user_and_per_address(
    make_queue: MakeQueue,
) -> None:
    async with make_queue(login_failures_per_user=3, login_failures_per_address=5) as queue:
        codes = [(await _login_from(queue, "alice", "wrong", "10.0.0.1")).status_code
                 for _ in range(3)]
        assert codes == [401] * 3
        r = await _login_from(queue, "alice", PASSWORDS["alice"], "10.0.0.2")
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert "this user" in r.json()["detail"]
        # Another user from the same address: two more failures reach the address's limit.
        for _ in range(2):
            assert (await _login_from(queue, "bob", "wrong", "10.0.0.1")).status_code == 401
        r = await _login_from(queue, "carol", PASSWORDS["carol"], "10.0.0.1")
        assert r.status_code == 429 and "this address" in r.json()["detail"]
        assert (await _login_from(queue, "carol", PASSWORDS["carol"], "10.0.0.3")).is_success


async def test_concurrent_password_hashing_is_bounded(make_queue: MakeQueue) -> None:
    """60 wrong-password logins at once: at most 1 hashes and 2 wait; the rest are told
    to come back (429, Retry-After), none is a 500."""
    async with make_queue(login_concurrency=1, login_queue=2) as queue:
        answers = await asyncio.gather(
            *(_login_from(queue, f"user{i:03d}", "wrong", f"10.1.0.{i}") for i in range(60))
        )
        codes = [r.status_code for r in answers]
        assert set(codes) == {401, 429}, codes
        assert 3 <= codes.count(401) < 60
        assert all(r.headers["Retry-After"] == "1" for r in answers if r.status_code == 429)
