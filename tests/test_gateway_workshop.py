"""Issue 10, behaviours 3, 4 and 5 through the real stack (queue + Redis + gateway over HTTP):

- 3: the dozens of requests a page load makes cost the queue ONE password check (the
  gateway caches the sign-in); a wrong password is never taken from that cache.
- 4: `/userNNN/workshop/queue`, what the frontend extension shows: the participant's own
  jobs with their place in the shared queue and, once a GPU worker is connected, when they
  should start; `workers_alive` 0 while none is.
- 5: hashed frontend assets are served immutable and gzip-compressed (the same bytes once
  gunzipped); `index.html` is revalidated, never immutable.
"""

from __future__ import annotations

import asyncio
import gzip
import re
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import services.queue.auth as queue_auth
from tests.gateway_harness import PASSWORDS, Stack, start_stack
from tests.queue_harness import WORKFLOW, WorkerClient

pytestmark = pytest.mark.timeout(120)


async def _until(
    probe: Callable[[], Awaitable[Any]], ok: Callable[[Any], bool], timeout_s: float = 20
) -> Any:
    """Ask `probe` again until `ok(answer)`; the answer. For what no event announces: the
    pool the gateway reports is cached 2 s at the queue and 2 s at the gateway (a worker
    shows within ~4 s), and the assets are compressed by a background task at start."""
    async with asyncio.timeout(timeout_s):
        while True:
            answer = await probe()
            if ok(answer):
                return answer
            await asyncio.sleep(0.05)


# -- behaviour 3: one password check per sign-in ----------------------------------------------
class PasswordChecks:
    """Counts the queue's password hash checks (its `verify_password`), passing each on."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        self._lock = threading.Lock()
        real = queue_auth.verify_password

        def counting(stored_hash: str, password: str) -> bool:
            with self._lock:
                self.calls.append(password)
            return real(stored_hash, password)

        monkeypatch.setattr(queue_auth, "verify_password", counting)

    def __len__(self) -> int:
        with self._lock:
            return len(self.calls)


async def test_a_page_load_checks_the_password_once(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with start_stack(redis_url, tmp_path / "files") as stack:
        checks = PasswordChecks(monkeypatch)
        one = stack.client("user001")
        # A page load: the page itself, then dozens of requests at once, all with the
        # browser's Basic credentials.
        assert (await one.get("/user001/history")).status_code == 200
        answers = await asyncio.gather(
            *(one.get(f"/user001/{p}") for p in ("history", "queue") * 15)
        )
        assert [r.status_code for r in answers] == [200] * 30
        answers = [await one.get(f"/user001/api/{p}") for p in ("history", "queue") * 5]
        assert [r.status_code for r in answers] == [200] * 10
        assert checks.calls == [PASSWORDS["user001"]]  # one hash check for 41 requests

        # A wrong password for the same (cached) user is asked of the queue and refused,
        # each time: it is never answered from the cache as a success.
        wrong = stack.client("user001", "not-the-password")
        for _ in range(3):
            r = await wrong.get("/user001/history")
            assert r.status_code == 401, r.text
            assert r.headers["WWW-Authenticate"].startswith('Basic realm="ComfyUI (user001)"')
        assert checks.calls == [PASSWORDS["user001"]] + ["not-the-password"] * 3
        # Nor did the failures push the right password out of the cache.
        assert (await one.get("/user001/queue")).status_code == 200
        assert len(checks) == 4

        # Another participant is checked once too, and only enters their own space.
        two = stack.client("user002")
        assert (await two.get("/user002/queue")).status_code == 200
        answers = await asyncio.gather(*(two.get("/user002/history") for _ in range(10)))
        assert [r.status_code for r in answers] == [200] * 10
        assert (await two.get("/user001/history")).status_code == 403
        assert checks.calls[4:] == [PASSWORDS["user002"]]
        for client in (one, wrong, two):
            await client.aclose()


async def test_simultaneous_first_requests_check_the_password_once(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with start_stack(redis_url, tmp_path / "files") as stack:
        checks = PasswordChecks(monkeypatch)
        one = stack.client("user001")
        answers = await asyncio.gather(*(one.get("/user001/queue") for _ in range(10)))
        await one.aclose()
        assert [r.status_code for r in answers] == [200] * 10
        assert len(checks) == 1, len(checks)


async def test_too_many_wrong_passwords_get_a_4xx_not_a_500(redis_url: str, tmp_path: Path) -> None:
    async with start_stack(redis_url, tmp_path / "files") as stack:
        wrong = stack.client("user001", "not-the-password")
        answers = [await wrong.get("/user001/history") for _ in range(12)]
        await wrong.aclose()
        codes = [r.status_code for r in answers]
        assert codes[:10] == [401] * 10  # the queue's limit: 10 failures per user
        assert codes[10:] == [429, 429], codes
        assert "too many" in answers[-1].text.lower(), answers[-1].text


# -- behaviour 4: the participant's place in the shared queue -------------------------------
async def _submit(stack: Stack, user: str) -> str:
    """A job queued by `user` at the queue's own API (no worker: the gateway's /prompt would
    have no node catalogue to validate against)."""
    async with httpx.AsyncClient(base_url=stack.queue.base_url) as client:
        r = await client.post(
            "/api/auth/token", json={"username": user, "password": PASSWORDS[user]}
        )
        token = r.json()["access_token"]
        r = await client.post(
            "/api/jobs", json={"workflow": WORKFLOW}, headers={"Authorization": f"Bearer {token}"}
        )
    assert r.status_code in (200, 201), r.text
    return str(r.json()["id"])


async def test_queue_place_lists_own_jobs_with_positions(redis_url: str, tmp_path: Path) -> None:
    async with start_stack(redis_url, tmp_path / "files") as stack:
        one, two = stack.client("user001"), stack.client("user002")
        mine = [await _submit(stack, "user001")]
        theirs = await _submit(stack, "user002")
        mine.append(await _submit(stack, "user001"))

        async def place(client: httpx.AsyncClient = one, user: str = "user001") -> Any:
            r = await client.get(f"/{user}/workshop/queue")
            assert r.status_code == 200, r.text
            return r.json()

        # No GPU worker registered: the extension says so, and promises no start time.
        idle = await _until(place, lambda p: p["workers_alive"] == 0)
        assert [j["prompt_id"] for j in idle["jobs"]] == mine  # not user002's job
        assert theirs not in str(idle)
        assert idle["queued_total"] == 3
        assert all(j["state"] == "queued" for j in idle["jobs"])
        positions = [j["position"] for j in idle["jobs"]]
        assert all(isinstance(p, int) and p >= 1 for p in positions), positions
        assert positions[0] < positions[1] <= 3, positions
        assert all("starts_in_s" not in j for j in idle["jobs"])
        # The /api/ spelling answers the same; user002 sees only their one job.
        assert (await one.get("/user001/api/workshop/queue")).json()["jobs"] == idle["jobs"]
        other = await place(two, "user002")
        assert [j["prompt_id"] for j in other["jobs"]] == [theirs]
        assert set(positions).isdisjoint({other["jobs"][0]["position"]})
        assert (await two.get("/user001/workshop/queue")).status_code == 403

        # A worker connects (it leases nothing yet): each queued job gets a start estimate,
        # from its position (no job timed yet: 20 s a job, the running ones half done).
        worker = await WorkerClient.register(stack.queue, "w0")
        live = await _until(place, lambda p: p["workers_alive"] == 1)
        assert [j["prompt_id"] for j in live["jobs"]] == mine
        for job in live["jobs"]:
            assert job["starts_in_s"] == (job["position"] - 1) * 20 + 10, job

        # The worker takes the oldest job: it is no longer waiting, and the rest move up.
        lease = await worker.lease()
        assert lease is not None and lease["job"]["id"] == mine[0]
        moved = await _until(place, lambda p: p["jobs"][0]["state"] != "queued")
        assert [j["prompt_id"] for j in moved["jobs"]] == mine
        assert "starts_in_s" not in moved["jobs"][0]
        assert moved["jobs"][1]["position"] < positions[1]
        await worker.aclose()
        for client in (one, two):
            await client.aclose()


# -- behaviour 5: hashed assets immutable and compressed ------------------------------------
def _hashed_script(index_html: str) -> str:
    """The first `<script src>` of the page under assets/, as the browser resolves it from
    /user001/ (relative, or absolute at the root)."""
    sources = re.findall(r'<script[^>]*\ssrc="([^"]+)"', index_html)
    for src in sources:
        path = src.removeprefix("./")
        if path.startswith("assets/") or path.startswith("/assets/"):
            return path
    raise AssertionError(f"no hashed script in index.html: {sources}")


async def test_hashed_assets_are_compressed_and_immutable(
    redis_url: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    cache = tmp_path_factory.getbasetemp().parent / "frontend-cache"  # the browser test's
    async with start_stack(
        redis_url, tmp_path / "files", precompress=True, asset_cache_dir=cache
    ) as stack:
        one = stack.client("user001")
        index = await one.get("/user001/")
        assert index.status_code == 200
        assert "immutable" not in index.headers["cache-control"]
        assert index.headers["cache-control"] == "no-cache"
        src = _hashed_script(index.text)
        url = src if src.startswith("/") else f"/user001/{src}"
        assert re.search(r"-[A-Za-z0-9_-]{8}\.js$", url), url

        plain = await one.get(url, headers={"Accept-Encoding": "identity"})
        assert plain.status_code == 200
        assert "content-encoding" not in plain.headers
        assert plain.headers["content-type"].startswith("application/javascript")
        assert len(plain.content) > 1024

        async def gzipped() -> tuple[httpx.Response, bytes]:
            # The raw bytes as sent: httpx would otherwise decode them for us.
            request = one.build_request("GET", url, headers={"Accept-Encoding": "gzip"})
            response = await one.send(request, stream=True)
            raw = b"".join([chunk async for chunk in response.aiter_raw()])
            await response.aclose()
            return response, raw

        # Precompression runs in the background at start: wait for it to reach this file.
        packed, raw = await _until(
            gzipped, lambda answer: answer[0].headers.get("content-encoding") == "gzip", 60
        )
        for r in (plain, packed):
            control = r.headers["cache-control"]
            assert "immutable" in control, control
            max_age = int(re.search(r"max-age=(\d+)", control)[1])  # type: ignore[index]
            assert max_age >= 30 * 24 * 3600, control
            assert "accept-encoding" in r.headers["vary"].lower()
        assert len(raw) < len(plain.content)
        assert gzip.decompress(raw) == plain.content
        # The root spelling the frontend also uses is the same file, cached the same way.
        root = await one.get("/" + url.split("/", 2)[2], headers={"Accept-Encoding": "identity"})
        assert root.status_code == 200 and root.content == plain.content
        assert "immutable" in root.headers["cache-control"]
        await one.aclose()


async def test_a_changed_extension_is_not_served_from_a_stale_gzip(
    redis_url: str, tmp_path: Path
) -> None:
    from services.gateway.frontend import EXTENSION_DIR, frontend_version

    current = (EXTENSION_DIR / "workshop.js").read_bytes()
    # What a previous deploy left in the (persistent, shared) cache folder.
    stale = tmp_path / "cache" / frontend_version() / "extensions/workshop/workshop.js.gz"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(gzip.compress(b"// the extension as it was before this deploy\n"))
    async with start_stack(
        redis_url, tmp_path / "files", precompress=True, asset_cache_dir=tmp_path / "cache"
    ) as stack:
        one = stack.client("user001")
        url = "/user001/extensions/workshop/workshop.js"
        plain = await one.get(url, headers={"Accept-Encoding": "identity"})
        assert plain.content == current

        async def gzipped() -> httpx.Response:
            return await one.get(url, headers={"Accept-Encoding": "gzip"})  # httpx gunzips

        packed = await _until(gzipped, lambda r: r.headers.get("content-encoding") == "gzip", 60)
        await one.aclose()
        assert packed.content == current
