"""Participants from the cockpit (issue 12): add one with a generated password, reset a
password (old sessions end), disable and enable, per-user running and daily limits, and the
usage the users list shows."""

from __future__ import annotations

import httpx
import pytest

from services.contracts import Role
from tests.queue_harness import WORKFLOW, MakeQueue, QueueHarness, WorkerClient

pytestmark = pytest.mark.timeout(60)


async def _login(queue: QueueHarness, user: str, password: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=queue.base_url) as http:
        return await http.post("/api/auth/token", json={"username": user, "password": password})


def _bearer(queue: QueueHarness, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=queue.base_url, headers={"Authorization": f"Bearer {token}"})


async def test_an_added_participant_signs_in_with_the_password_shown_once(
    queue: QueueHarness,
) -> None:
    admin = await queue.client("admin")
    r = await admin.post("/api/admin/users", json={"id": "user021"})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["id"] == "user021" and created["role"] == Role.PARTICIPANT
    assert len(created["password"]) >= 12
    assert (await _login(queue, "user021", created["password"])).status_code == 200
    # Given a password, that one; an instructor by role.
    r = await admin.post(
        "/api/admin/users", json={"id": "teacher", "role": "instructor", "password": "chalk-board"}
    )
    assert r.status_code == 201 and r.json()["password"] == "chalk-board"
    assert (await _login(queue, "teacher", "chalk-board")).json()["role"] == Role.INSTRUCTOR
    # Taken ids, bad ids and bad passwords are refused with the reason; nothing changes.
    r = await admin.post("/api/admin/users", json={"id": "user021", "password": "something-else"})
    assert r.status_code == 409 and "exists" in r.json()["detail"]
    assert (await _login(queue, "user021", created["password"])).status_code == 200
    r = await admin.post("/api/admin/users", json={"id": "bad id"})
    assert r.status_code == 400 and "invalid user id" in r.json()["detail"]
    r = await admin.post("/api/admin/users", json={"id": "dan", "password": "short"})
    assert r.status_code == 422
    listed = {u["id"] for u in (await admin.get("/api/admin/users")).json()}
    assert {"user021", "teacher"} <= listed and "bad id" not in listed and "dan" not in listed


async def test_a_reset_password_ends_the_old_sessions(queue: QueueHarness) -> None:
    admin = await queue.client("admin")
    old = _bearer(queue, await queue.token("alice"))
    assert (await old.get("/api/jobs")).status_code == 200
    r = await admin.post("/api/admin/users/alice/reset-password", json={})
    assert r.status_code == 200, r.text
    new_password = r.json()["password"]
    assert r.json()["id"] == "alice" and new_password != "alice-password"
    assert (await old.get("/api/jobs")).status_code == 401
    assert (await _login(queue, "alice", "alice-password")).status_code == 401
    assert (await _login(queue, "alice", new_password)).status_code == 200
    r = await admin.post("/api/admin/users/alice/reset-password", json={"password": "chosen-one"})
    assert r.json() == {"id": "alice", "password": "chosen-one"}
    assert (await _login(queue, "alice", "chosen-one")).status_code == 200
    r = await admin.post("/api/admin/users/nobody/reset-password", json={})
    assert r.status_code == 404 and "unknown user" in r.json()["detail"]
    await old.aclose()


async def test_a_disabled_participant_is_out_at_once_and_back_when_enabled(
    queue: QueueHarness,
) -> None:
    admin = await queue.client("admin")
    bob = _bearer(queue, await queue.token("bob"))
    r = await admin.post("/api/admin/users/bob/disable")
    assert r.status_code == 200 and r.json()["disabled"] is True
    assert (await bob.get("/api/jobs")).status_code == 401
    r = await _login(queue, "bob", "bob-password")
    assert r.status_code == 403 and "disabled" in r.json()["detail"]
    listed = {u["id"]: u["disabled"] for u in (await admin.get("/api/admin/users")).json()}
    assert listed["bob"] is True and listed["alice"] is False
    r = await admin.post("/api/admin/users/bob/enable")
    assert r.status_code == 200 and r.json()["disabled"] is False
    assert (await _login(queue, "bob", "bob-password")).status_code == 200
    r = await admin.post("/api/admin/users/admin/disable")
    assert r.status_code == 409 and "admin" in r.json()["detail"]
    assert (await admin.post("/api/admin/users/nobody/disable")).status_code == 404
    await bob.aclose()


async def test_a_running_limit_applies_at_once(queue: QueueHarness) -> None:
    admin, alice = await queue.client("admin"), await queue.client("alice")
    for _ in range(3):
        assert (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).status_code == 201
    r = await admin.put("/api/admin/users/alice/limits", json={"running": 1, "daily": None})
    assert r.status_code == 200, r.text
    assert r.json()["limits"] == {"running": 1, "daily": None}
    w0 = await WorkerClient.register(queue, "w0")
    w1 = await WorkerClient.register(queue, "w1")
    assert (await w0.lease())["job"]["user"] == "alice"
    assert await w1.lease(wait_s=0) is None  # alice is at her limit of one
    # Raised to three: her next job is claimable at once.
    r = await admin.put("/api/admin/users/alice/limits", json={"running": 3})
    assert r.json()["limits"]["running"] == 3
    assert (await w1.lease(wait_s=0))["job"]["user"] == "alice"
    r = await admin.put("/api/admin/users/alice/limits", json={"running": 0})
    assert r.status_code == 422
    r = await admin.put("/api/admin/users/nobody/limits", json={"running": 1})
    assert r.status_code == 404
    await w0.aclose()
    await w1.aclose()


async def test_past_the_daily_limit_a_submit_is_429_until_midnight(queue: QueueHarness) -> None:
    admin, bob = await queue.client("admin"), await queue.client("bob")
    r = await admin.put("/api/admin/users/bob/limits", json={"daily": 2})
    assert r.status_code == 200 and r.json()["limits"] == {"running": None, "daily": 2}
    for _ in range(2):
        assert (await bob.post("/api/jobs", json={"workflow": WORKFLOW})).status_code == 201
    r = await bob.post("/api/jobs", json={"workflow": WORKFLOW})
    assert r.status_code == 429
    assert "daily limit 2" in r.json()["detail"] and "midnight UTC" in r.json()["detail"]
    assert 1 <= int(r.headers["Retry-After"]) <= 86400
    # Others are not limited; lifting bob's limit lets him submit again.
    alice = await queue.client("alice")
    assert (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).status_code == 201
    await admin.put("/api/admin/users/bob/limits", json={"daily": None})
    assert (await bob.post("/api/jobs", json={"workflow": WORKFLOW})).status_code == 201
    usage = {u["id"]: u["usage"] for u in (await admin.get("/api/admin/users")).json()}
    assert usage["bob"]["jobs_today"] == 3 and usage["bob"]["jobs"] == 3
    assert usage["alice"]["jobs_today"] == 1 and usage["carol"]["jobs"] == 0


async def test_what_an_admin_changed_survives_a_restart_until_the_config_changes(
    make_queue: MakeQueue,
) -> None:
    """The configured users are applied when their declaration is new or changed: a reset
    password (or a deleted user) stays so across restarts, or the printed sheet would lie."""
    async with make_queue() as queue:
        admin = await queue.client("admin")
        r = await admin.post(
            "/api/admin/users/alice/reset-password", json={"password": "reset-one"}
        )
        assert r.status_code == 200
        assert (await admin.delete("/api/admin/users/bob")).status_code == 204
    async with make_queue() as queue:  # the same configuration, the same Redis
        assert (await _login(queue, "alice", "reset-one")).status_code == 200
        assert (await _login(queue, "alice", "alice-password")).status_code == 401
        assert (await _login(queue, "bob", "bob-password")).status_code == 401
        assert (await _login(queue, "carol", "carol-password")).status_code == 200
    changed = {"alice": {"password": "configured-anew"}}
    async with make_queue(users=changed) as queue:  # the organizer changed alice's password
        assert (await _login(queue, "alice", "configured-anew")).status_code == 200
        assert (await _login(queue, "alice", "reset-one")).status_code == 401
