"""The authorization matrix: who may call what."""

from __future__ import annotations

import time

import httpx
import jwt
import pytest

from services.contracts import WORKER_TOKEN_PREFIX, JobState, Mode, Role
from tests.queue_harness import WORKFLOW, QueueHarness, WorkerClient

PERSON_ENDPOINTS = [
    ("GET", "/api/jobs", None),
    ("POST", "/api/jobs", {"workflow": WORKFLOW}),
    ("GET", "/api/jobs/0123", None),
    ("POST", "/api/jobs/0123/cancel", None),
    ("DELETE", "/api/jobs/0123", None),
    ("DELETE", "/api/jobs?state=finished", None),
    ("GET", "/api/pool", None),
    ("GET", "/api/me", None),
]
ADMIN_ENDPOINTS = [
    ("GET", "/api/admin/overview", None),
    ("GET", "/api/admin/mode", None),
    ("PUT", "/api/admin/mode", {"mode": Mode.FIFO}),
    ("GET", "/api/admin/jobs", None),
    ("GET", "/api/admin/workers", None),
    ("GET", "/api/admin/users", None),
    ("PUT", "/api/admin/users/dave", {"password": "dave-password"}),
    ("DELETE", "/api/admin/users/bob", None),
    ("POST", "/api/admin/worker-tokens", {"name": "gpu9"}),
    ("DELETE", "/api/admin/worker-tokens/w1", None),
    ("GET", "/api/metrics", None),
    # The cockpit's routes (services/queue/api/cockpit.py).
    ("POST", "/api/admin/queue/pause", None),
    ("POST", "/api/admin/queue/resume", None),
    ("POST", "/api/admin/jobs/0123/bump", None),
    ("POST", "/api/admin/workers/{worker_id}/drain", None),
    ("POST", "/api/admin/workers/{worker_id}/undrain", None),
    ("POST", "/api/admin/users", {"id": "user021"}),
    ("POST", "/api/admin/users/bob/reset-password", {}),
    ("POST", "/api/admin/users/bob/disable", None),
    ("POST", "/api/admin/users/bob/enable", None),
    ("PUT", "/api/admin/users/bob/limits", {"running": 1, "daily": 5}),
    ("POST", "/api/admin/push-workflow", {"workflow": {"nodes": [], "links": []}}),
    ("POST", "/api/admin/credentials-sheet", {"reset": True}),
    ("GET", "/api/admin/stats", None),  # services/queue/api/stats.py
    ("GET", "/api/admin/cost", None),
    ("GET", "/api/admin/eta", None),
]
WORKER_ENDPOINTS = [
    ("POST", "/api/worker/register", {}),
    ("POST", "/api/worker/lease", {"worker_id": "w0", "wait_s": 0}),
    ("POST", "/api/worker/heartbeat", {"worker_id": "w0", "leases": []}),
    ("POST", "/api/worker/jobs/x/start", {"worker_id": "w0", "lease_id": "y"}),
    ("POST", "/api/worker/jobs/x/progress", {"worker_id": "w0", "lease_id": "y"}),
    ("POST", "/api/worker/jobs/x/complete", {"worker_id": "w0", "lease_id": "y"}),
    ("POST", "/api/worker/jobs/x/fail", {"worker_id": "w0", "lease_id": "y", "error": {}}),
    ("POST", "/api/worker/release", {"worker_id": "w0"}),
    ("POST", "/api/worker/jobs/x/events", {"worker_id": "w0", "lease_id": "y", "messages": []}),
    ("POST", "/api/worker/jobs/x/release", {"worker_id": "w0", "lease_id": "y"}),
    ("POST", "/api/worker/jobs/x/decline", {"worker_id": "w0", "lease_id": "y", "error": {}}),
    ("PUT", "/api/worker/catalog/0", {}),
]
#: Any person or worker (the pool's node catalogue: the gateway and the admin read it).
ANYONE_ENDPOINTS = [("GET", "/api/catalog", None)]
ALL = PERSON_ENDPOINTS + ADMIN_ENDPOINTS + WORKER_ENDPOINTS + ANYONE_ENDPOINTS


async def _call(client: httpx.AsyncClient, method: str, path: str, body: object) -> int:
    return (await client.request(method, path, json=body)).status_code


def test_every_route_is_in_the_matrix(queue_app_routes: set[tuple[str, str]]) -> None:
    """A new endpoint must be added here, so its authorization is tested too."""
    public = {("GET", "/api/health"), ("GET", "/api/ready"), ("POST", "/api/auth/token")}
    covered = {(m, p.split("?")[0].replace("0123", "{job_id}").replace("/x/", "/{job_id}/")
                .replace("dave", "{uid}").replace("bob", "{uid}").replace("/w1", "/{name}")
                .replace("/catalog/0", "/catalog/{digest}"))
               for m, p, _ in ALL}
    assert queue_app_routes - public == covered


@pytest.fixture
def queue_app_routes(queue: QueueHarness) -> set[tuple[str, str]]:
    """Every HTTP route the service declares, from its own OpenAPI document."""
    paths = queue.app.openapi()["paths"]
    return {(method.upper(), path) for path, ops in paths.items() for method in ops}


async def test_no_token_is_401_everywhere(queue: QueueHarness) -> None:
    anon = await queue.client(None)
    for method, path, body in ALL:
        assert await _call(anon, method, path, body) == 401, (method, path)
    r = await anon.get("/api/jobs")
    assert r.headers["www-authenticate"] == "Bearer"
    assert "authentication required" in r.json()["detail"]
    await anon.aclose()


async def test_bad_or_expired_tokens_are_401(queue: QueueHarness) -> None:
    secret = queue.settings.token_secret.get_secret_value()
    expired = jwt.encode({"sub": "alice", "role": Role.PARTICIPANT, "exp": int(time.time()) - 5},
                         secret, algorithm="HS256")
    forged = jwt.encode({"sub": "admin", "role": Role.ADMIN, "exp": int(time.time()) + 60},
                        "not-the-secret-not-the-secret-not-it", algorithm="HS256")
    cases = {
        f"Bearer {expired}": "token expired",
        f"Bearer {forged}": "invalid token",
        f"Bearer {WORKER_TOKEN_PREFIX}not-a-worker-token": "unknown or revoked worker token",
        "Basic YWxpY2U6d3Jvbmc=": "wrong username or password",  # alice:wrong
        "Digest abc": "unsupported authorization scheme",
    }
    async with httpx.AsyncClient(base_url=queue.base_url) as http:
        for header, message in cases.items():
            r = await http.get("/api/jobs", headers={"Authorization": header})
            assert r.status_code == 401 and message in r.json()["detail"], header
        r = await http.post("/api/auth/token", json={"username": "nobody", "password": "x"})
        assert r.status_code == 401 and r.json()["detail"] == "wrong username or password"
        r = await http.post("/api/auth/token", json={"username": "alice", "password": "x"})
        assert r.status_code == 401 and r.json()["detail"] == "wrong username or password"
        # Basic auth with the right password works, as the gateway will use it.
        r = await http.get("/api/me", auth=("alice", "alice-password"))
        assert r.json() == {"id": "alice", "role": Role.PARTICIPANT}


async def test_participants_see_only_their_own_jobs(queue: QueueHarness) -> None:
    alice, bob = await queue.client("alice"), await queue.client("bob")
    job = (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json()
    assert (await bob.get(f"/api/jobs/{job['id']}")).status_code == 404
    assert (await bob.post(f"/api/jobs/{job['id']}/cancel")).status_code == 404
    assert (await bob.get("/api/jobs")).json() == []
    assert (await alice.get(f"/api/jobs/{job['id']}")).status_code == 200
    # Participants may not act for others or reach the admin API.
    r = await bob.post("/api/jobs", json={"workflow": WORKFLOW, "user": "alice"})
    assert r.status_code == 403
    for method, path, body in ADMIN_ENDPOINTS:
        assert await _call(bob, method, path, body) == 403, (method, path)
    for method, path, body in WORKER_ENDPOINTS:
        assert await _call(bob, method, path, body) == 403, (method, path)
    # The job is untouched.
    assert (await alice.get(f"/api/jobs/{job['id']}")).json()["state"] == JobState.QUEUED
    await alice.aclose()
    await bob.aclose()


async def test_worker_tokens_reach_only_the_worker_api(queue: QueueHarness) -> None:
    worker = await queue.client("w0")
    for method, path, body in ADMIN_ENDPOINTS + PERSON_ENDPOINTS:
        assert await _call(worker, method, path, body) == 403, (method, path)
    # A worker token cannot act as another worker.
    r = await worker.post("/api/worker/lease", json={"worker_id": "w1", "wait_s": 0})
    assert r.status_code == 403 and "belongs to worker 'w0'" in r.json()["detail"]
    r = await worker.post("/api/worker/lease", json={"worker_id": "w0/gpu1", "wait_s": 0})
    assert r.status_code == 403 and "not registered" in r.json()["detail"]
    assert (await worker.post("/api/worker/register", json={"instance": "gpu1"})).is_success
    r = await worker.post("/api/worker/lease", json={"worker_id": "w0/gpu1", "wait_s": 0})
    assert r.status_code == 200
    await worker.aclose()


async def test_admin_manages_users_and_worker_tokens(queue: QueueHarness) -> None:
    admin = await queue.client("admin")
    r = await admin.put("/api/admin/users/dave", json={"password": "dave-password"})
    assert r.status_code == 200
    assert {k: r.json()[k] for k in ("id", "role", "disabled")} == {
        "id": "dave", "role": Role.PARTICIPANT, "disabled": False
    }
    async with httpx.AsyncClient(base_url=queue.base_url) as http:
        r = await http.post("/api/auth/token",
                            json={"username": "dave", "password": "dave-password"})
        assert r.status_code == 200 and r.json()["role"] == Role.PARTICIPANT
    r = await admin.put("/api/admin/users/bad%20id", json={"password": "whatever-1"})
    assert r.status_code == 400 and "invalid user id" in r.json()["detail"]
    r = await admin.post("/api/jobs", json={"workflow": WORKFLOW, "user": "nobody"})
    assert r.status_code == 404 and "unknown user" in r.json()["detail"]

    token = (await admin.post("/api/admin/worker-tokens", json={"name": "gpu9"})).json()["token"]
    async with httpx.AsyncClient(base_url=queue.base_url,
                                 headers={"Authorization": f"Bearer {token}"}) as gpu9:
        r = await gpu9.post("/api/worker/register", json={"gpu": "H100"})
        assert r.json()["worker_id"] == "gpu9"
        assert (await admin.delete("/api/admin/worker-tokens/gpu9")).status_code == 204
        r = await gpu9.post("/api/worker/lease", json={"worker_id": "gpu9", "wait_s": 0})
        assert r.status_code == 401
    await admin.aclose()


async def test_admin_sees_and_cancels_anyones_job(queue: QueueHarness) -> None:
    alice, admin = await queue.client("alice"), await queue.client("admin")
    job = (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json()
    assert [j["id"] for j in (await admin.get("/api/admin/jobs")).json()] == [job["id"]]
    r = await admin.get(f"/api/jobs/{job['id']}?workflow=true")
    assert r.json()["workflow"] == WORKFLOW
    assert (await admin.post(f"/api/jobs/{job['id']}/cancel")).json()["state"] == JobState.CANCELLED
    worker = await WorkerClient.register(queue, "w0")
    assert await worker.lease() is None
    for c in (alice, admin, worker):
        await c.aclose()
