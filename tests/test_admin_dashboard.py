"""The organizer's dashboard (/admin/) in real headless Chromium, on one shared stack: the queue,
the gateway, and three real workers (services/worker) on ComfyUI doubles.

It refuses to load data without admin credentials (and with a participant's); a participant's
job shows up live within 1 s, its progress bar moves and it completes, and the workers panel
shows the heartbeat's health line (issue 9); cancel, bump, pause/resume, drain/undrain and the
mode switch act on the queue; participants are added, reset, disabled and limited from the page;
the credentials sheet opens in a new tab; a pushed workflow (file or pasted, to one or all) lands
on a participant's canvas in a second page; every control has an accessible name and a
phone-width page does not scroll sideways; screenshots of the dashboard under load (40 jobs from
10 participants, cost, ETA and charts filled in) and at phone width are saved under
tests/artifacts/ (the paths are printed; run with -s to see them)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from services.contracts import JobState, participant_name
from services.local_redis import LocalRedis
from tests.comfyui_double import start_double
from tests.gateway_harness import ADMIN_PASSWORD, PASSWORDS, Stack, start_stack
from tests.test_gateway_browser import ARGS, CHROMIUM, READY
from tests.worker_harness import running_worker, txt2img, worker_settings

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="scripts/install-test-packages.sh"),
]

ARTIFACTS = Path(__file__).parent / "artifacts"
CKPT = "sd15.safetensors"
STEP_S = 0.1
#: Ten participants for the load picture: the stack's three plus seven added through the API.
EXTRA = {participant_name(n): f"password-of-{participant_name(n)}" for n in range(4, 11)}
ALL_PASSWORDS = {**PASSWORDS, **EXTRA}
UI_TIMEOUT_MS = 10_000


def graph(steps: int, text: str = "a cat") -> dict[str, Any]:
    g = txt2img(CKPT)
    g["3"]["inputs"]["steps"] = steps
    g["6"]["inputs"]["text"] = text
    return g


@dataclass
class Cockpit:
    stack: Stack
    browser: Any
    admin: httpx.AsyncClient

    @property
    def url(self) -> str:
        return self.stack.queue.base_url + "/admin/"

    def participant(self, user: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.stack.queue.base_url, auth=(user, ALL_PASSWORDS[user]), timeout=30
        )

    async def page(self, **context: Any) -> Any:
        options = {"viewport": {"width": 1400, "height": 1000}, **context}
        ctx = await self.browser.new_context(**options)
        return await ctx.new_page()

    async def signed_in(self, **context: Any) -> Any:
        """A page signed in as admin, live on the event stream."""
        page = await self.page(**context)
        await page.goto(self.url)
        await sign_in(page, "admin", ADMIN_PASSWORD)
        await page.wait_for_selector("#live[data-live='1']", timeout=UI_TIMEOUT_MS)
        await page.wait_for_selector("#dash:not([hidden])", timeout=UI_TIMEOUT_MS)
        return page

    async def cancel_everything(self) -> None:
        r = await self.admin.get("/api/admin/jobs", params={"limit": 1000})
        for job in r.json():
            if job["state"] in ("queued", "leased", "running"):
                await self.admin.post(f"/api/jobs/{job['id']}/cancel")


async def sign_in(page: Any, user: str, password: str) -> None:
    await page.fill("#login-user", user)
    await page.fill("#login-password", password)
    await page.click("#login-form button[type=submit]")


@pytest.fixture(scope="module")
async def cockpit(
    redis_server: LocalRedis, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Cockpit]:
    from playwright.async_api import async_playwright

    assert redis_server.port != 6379
    client = redis.Redis(port=redis_server.port)
    client.flushall()
    client.close()
    root = tmp_path_factory.mktemp("cockpit")
    files = root / "files"
    cache = tmp_path_factory.getbasetemp() / "frontend-cache"
    async with contextlib.AsyncExitStack() as stack_cm:
        stack = await stack_cm.enter_async_context(
            start_stack(redis_server.url, files, asset_cache_dir=cache)
        )
        for n in range(3):
            comfy = await stack_cm.enter_async_context(
                start_double(root / f"comfy{n}", step_time_s=STEP_S,
                             models={"checkpoints": [CKPT]})
            )  # fmt: skip
            settings = worker_settings(
                stack.queue, comfy.url, {"dir": str(files)}, name=f"w{n}",
                provider="double", hourly_eur=0.5 + n / 10, instance=f"gpu-{n}",
            )  # fmt: skip
            await stack_cm.enter_async_context(running_worker(settings))
        admin = httpx.AsyncClient(
            base_url=stack.queue.base_url, auth=("admin", ADMIN_PASSWORD), timeout=30
        )
        stack_cm.push_async_callback(admin.aclose)
        for user, password in EXTRA.items():
            r = await admin.put(f"/api/admin/users/{user}", json={"password": password})
            assert r.status_code == 200, r.text
        pw = await stack_cm.enter_async_context(async_playwright())
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        stack_cm.push_async_callback(browser.close)
        yield Cockpit(stack, browser, admin)


async def submit(client: httpx.AsyncClient, workflow: dict[str, Any]) -> str:
    r = await client.post("/api/jobs", json={"workflow": workflow})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def admin_api_requests(page: Any) -> list[str]:
    seen: list[str] = []
    page.on("request", lambda r: seen.append(r.url) if "/api/admin/" in r.url else None)
    return seen


async def test_no_data_without_admin_credentials(cockpit: Cockpit) -> None:
    page = await cockpit.page()
    await page.goto(cockpit.url)
    await page.wait_for_selector("#login-form", timeout=UI_TIMEOUT_MS)
    assert await page.is_hidden("#dash")
    # The API behind the page refuses anonymous callers.
    status = await page.evaluate("async () => (await fetch('/api/admin/overview')).status")
    assert status == 401

    asked = admin_api_requests(page)  # from here on, only the page's own requests
    await sign_in(page, "admin", "not-the-password")
    await page.wait_for_function(
        "() => document.querySelector('#login-error').textContent.includes('Wrong name')",
        timeout=UI_TIMEOUT_MS,
    )
    await sign_in(page, "user001", PASSWORDS["user001"])
    await page.wait_for_function(
        "() => document.querySelector('#login-error').textContent.includes('participant')",
        timeout=UI_TIMEOUT_MS,
    )
    message = await page.text_content("#login-error")
    assert "user001 is a participant account" in message and "admin" in message
    assert await page.is_hidden("#dash")
    assert asked == []
    await page.context.close()


async def test_a_participants_job_appears_progresses_and_completes(cockpit: Cockpit) -> None:
    page = await cockpit.signed_in()
    # Record each value the job's progress bar takes, as the page sets it.
    await page.evaluate(
        """() => { window.__bars = {}; new MutationObserver(() => {
             for (const p of document.querySelectorAll('tr[data-job] progress')) {
               const id = p.closest('tr').dataset.job;
               (window.__bars[id] ||= []).push(Number(p.dataset.value)); }
           }).observe(document.querySelector('#jobs tbody'),
                      {subtree: true, attributes: true, childList: true}); }"""
    )
    workers = (await cockpit.admin.get("/api/admin/workers")).json()
    done_before = {w["id"]: (w["status"] or {}).get("jobs_done", 0) for w in workers}
    async with cockpit.participant("user001") as user:
        started = time.monotonic()
        job = await submit(user, graph(steps=20))
        await page.wait_for_selector(f"tr[data-job='{job}']", timeout=1000)
        appeared_s = time.monotonic() - started
        await page.wait_for_selector(
            f"tr[data-job='{job}'][data-state='succeeded']", timeout=UI_TIMEOUT_MS
        )
        record = (await user.get(f"/api/jobs/{job}")).json()
    assert appeared_s < 1.0
    assert record["state"] == JobState.SUCCEEDED
    values = await page.evaluate(f"() => window.__bars[{json.dumps(job)}]")
    between = sorted({v for v in values if 0 < v < 1})
    assert len(between) >= 3, values  # the bar moved through several steps
    assert values[-1] == 1.0
    assert await page.text_content(f"tr[data-job='{job}'] td:nth-child(2)") == "user001"
    # Issue 9: the workers panel shows each worker's health line as its heartbeat said it:
    # once the worker's next heartbeat counts the job, the row says so.
    worker = record["worker"]
    done = done_before[worker] + 1
    row = f"#workers tr[data-worker='{worker}']"
    await page.wait_for_selector(
        f"{row}[data-state='idle'][data-jobs-done='{done}']", timeout=UI_TIMEOUT_MS
    )
    listed = {w["id"]: w for w in (await cockpit.admin.get("/api/admin/workers")).json()}
    line = listed[worker]["status"]
    assert line["state"] == "idle" and line["jobs_done"] == done and line["comfyui"] == "up"
    assert line["job"] is None
    texts = await page.eval_on_selector(row, "tr => Array.from(tr.cells).map(c => c.textContent)")
    assert texts[0] == worker
    assert texts[1].startswith("double (€")  # provider and hourly price, as registered
    assert texts[4] == "up" and texts[5] == "none" and texts[6] == str(line["jobs_done"])
    assert texts[9] == "idle"
    await page.context.close()


async def test_cancel_from_the_page(cockpit: Cockpit) -> None:
    page = await cockpit.signed_in()
    async with cockpit.participant("user002") as user:
        job = await submit(user, graph(steps=400))  # 40 s: it is still running when cancelled
        row = f"tr[data-job='{job}']"
        await page.wait_for_selector(f"{row}[data-state='running']", timeout=UI_TIMEOUT_MS)
        # Issue 9: the worker's health line (from its heartbeat) names the job it runs.
        health = f"#workers tr[data-job='{job}'][data-state='busy'][data-comfyui='up']"
        await page.wait_for_selector(health, timeout=UI_TIMEOUT_MS)
        await page.get_by_role("button", name=f"cancel job {job}").click()
        await page.wait_for_selector(f"{row}[data-state='cancelled']", timeout=UI_TIMEOUT_MS)
        record = (await user.get(f"/api/jobs/{job}")).json()
    assert record["state"] == JobState.CANCELLED
    await page.context.close()


async def test_mode_switch_takes_effect(cockpit: Cockpit) -> None:
    page = await cockpit.signed_in()
    await page.wait_for_selector("#current-mode[data-mode='fair']", timeout=UI_TIMEOUT_MS)
    for mode in ("priority", "fair"):
        await page.select_option("#mode", mode)
        await page.get_by_role("button", name="Apply mode").click()
        await page.wait_for_selector(f"#current-mode[data-mode='{mode}']", timeout=UI_TIMEOUT_MS)
        r = await cockpit.admin.get("/api/admin/mode")
        assert r.json() == {"mode": mode}
    await page.context.close()


async def test_pause_bump_and_drain_from_the_page(cockpit: Cockpit) -> None:
    page = await cockpit.signed_in()
    await page.get_by_role("button", name="Pause queue").click()
    await page.wait_for_selector("body[data-paused='1']", timeout=UI_TIMEOUT_MS)
    assert (await cockpit.admin.get("/api/admin/overview")).json()["paused"] is True
    async with cockpit.participant("user003") as user:
        try:
            first = await submit(user, graph(steps=2))
            second = await submit(user, graph(steps=2))
            row = f"tr[data-job='{second}'][data-state='queued']"
            await page.wait_for_selector(row, timeout=UI_TIMEOUT_MS)
            await page.get_by_role("button", name=f"bump job {second} to the front").click()
            await page.wait_for_function(
                "() => document.querySelector('#action-msg').textContent.startsWith('Bump')",
                timeout=UI_TIMEOUT_MS,
            )
            jobs = {j["id"]: j for j in (await cockpit.admin.get("/api/admin/jobs")).json()}
            assert jobs[second]["position"] == 1 < jobs[first]["position"]
            # Paused: nothing was leased meanwhile.
            assert jobs[first]["state"] == jobs[second]["state"] == JobState.QUEUED
        finally:
            await page.get_by_role("button", name="Resume queue").click()
        await page.wait_for_selector("body[data-paused='0']", timeout=UI_TIMEOUT_MS)
        assert (await cockpit.admin.get("/api/admin/overview")).json()["paused"] is False
        for job in (first, second):
            await page.wait_for_selector(
                f"tr[data-job='{job}'][data-state='succeeded']", timeout=UI_TIMEOUT_MS
            )

    worker = (await cockpit.admin.get("/api/admin/workers")).json()[0]["id"]
    row = f"#workers tr[data-worker='{worker}']"
    try:
        await page.get_by_role("button", name=f"drain worker {worker}", exact=True).click()
        await page.wait_for_selector(f"{row}[data-draining='1']", timeout=UI_TIMEOUT_MS)
        listed = {w["id"]: w for w in (await cockpit.admin.get("/api/admin/workers")).json()}
        assert listed[worker]["draining"] is True
        # The worker hears it in its heartbeat and says so in its health line.
        await page.wait_for_selector(f"{row}[data-state='draining']", timeout=UI_TIMEOUT_MS)
    finally:
        await page.get_by_role("button", name=f"undrain worker {worker}", exact=True).click()
    await page.wait_for_selector(f"{row}[data-draining='0']", timeout=UI_TIMEOUT_MS)
    listed = {w["id"]: w for w in (await cockpit.admin.get("/api/admin/workers")).json()}
    assert listed[worker]["draining"] is False
    await page.context.close()


async def add_participant(page: Any, uid: str) -> str | None:
    """Add `uid` from the page's form; the generated password the page shows once."""
    await page.fill("#add-id", uid)
    await page.get_by_role("button", name="Add participant").click()
    await page.wait_for_selector("#secret:not([hidden])", timeout=UI_TIMEOUT_MS)
    return await page.text_content("#secret-value")


async def me_status(cockpit: Cockpit, user: str, password: str) -> int:
    async with httpx.AsyncClient(
        base_url=cockpit.stack.queue.base_url, auth=(user, password), timeout=30
    ) as client:
        return (await client.get("/api/me")).status_code


async def test_participant_actions_from_the_page(cockpit: Cockpit) -> None:
    page = await cockpit.signed_in()
    uid = "user021"
    generated = await add_participant(page, uid)
    assert generated and len(generated) >= 8
    assert await me_status(cockpit, uid, generated) == 200
    row = f"#users tr[data-user='{uid}']"
    await page.wait_for_selector(row, timeout=UI_TIMEOUT_MS)

    # Adding the same one again says why not.
    await page.fill("#add-id", uid)
    await page.get_by_role("button", name="Add participant").click()
    await page.wait_for_function(
        "() => document.querySelector('#action-msg').textContent.includes('exists')",
        timeout=UI_TIMEOUT_MS,
    )

    await page.get_by_role("button", name=f"reset password of {uid}").click()
    await page.wait_for_function(
        f"() => document.querySelector('#secret-value').textContent !== {json.dumps(generated)}",
        timeout=UI_TIMEOUT_MS,
    )
    fresh = await page.text_content("#secret-value")
    assert fresh
    assert await me_status(cockpit, uid, generated) == 401
    assert await me_status(cockpit, uid, fresh) == 200
    await page.get_by_role("button", name="Hide password").click()
    assert await page.is_hidden("#secret")
    assert await page.text_content("#secret-value") == ""

    await page.get_by_role("button", name=f"disable {uid}", exact=True).click()
    await page.wait_for_selector(f"{row}[data-disabled='1']", timeout=UI_TIMEOUT_MS)
    assert await me_status(cockpit, uid, fresh) != 200
    await page.get_by_role("button", name=f"enable {uid}", exact=True).click()
    await page.wait_for_selector(f"{row}[data-disabled='0']", timeout=UI_TIMEOUT_MS)
    assert await me_status(cockpit, uid, fresh) == 200

    await page.get_by_label(f"running limit of {uid}").fill("2")
    await page.get_by_label(f"daily limit of {uid}").fill("5")
    await page.get_by_role("button", name=f"save limits of {uid}").click()
    await page.wait_for_function(
        f"() => document.querySelector('#action-msg').textContent === 'Limits of {uid}: done'",
        timeout=UI_TIMEOUT_MS,
    )
    users = {u["id"]: u for u in (await cockpit.admin.get("/api/admin/users")).json()}
    assert users[uid]["limits"] == {"running": 2, "daily": 5}
    # A limit the queue refuses: the page says the queue's reason.
    await page.get_by_label(f"running limit of {uid}").fill("0")
    await page.get_by_role("button", name=f"save limits of {uid}").click()
    await page.wait_for_function(
        "() => document.querySelector('#action-msg').textContent"
        f".startsWith('Limits of {uid} failed')",
        timeout=UI_TIMEOUT_MS,
    )
    message = await page.text_content("#action-msg")
    assert "running" in message, message
    await page.context.close()


async def open_sheet(page: Any) -> Any:
    """Click "Open credentials sheet" and return the new tab once its cards are there."""
    async with page.context.expect_page(timeout=UI_TIMEOUT_MS) as opened:
        await page.get_by_role("button", name="Open credentials sheet").click()
    sheet = await opened.value
    await sheet.wait_for_selector(".card .password", timeout=UI_TIMEOUT_MS)
    return sheet


async def sheet_cards(sheet: Any) -> dict[str, tuple[str, str]]:
    cards = await sheet.eval_on_selector_all(
        ".card",
        """cards => cards.map(c => [c.querySelector('.user').textContent,
             c.querySelector('.url').textContent, c.querySelector('.password').textContent])""",
    )
    return {user: (url, password) for user, url, password in cards}


async def test_credentials_sheet_opens_in_a_new_tab(cockpit: Cockpit) -> None:
    page = await cockpit.signed_in()
    uid = "user022"
    shown = await add_participant(page, uid)
    await page.wait_for_selector(
        f"#sheet-user option[value='{uid}']", state="attached", timeout=UI_TIMEOUT_MS
    )
    await page.select_option("#sheet-user", uid)

    # The password this page showed, without changing it.
    await page.select_option("#sheet-passwords", "known")
    sheet = await open_sheet(page)
    cards = await sheet_cards(sheet)
    assert list(cards) == [uid]
    url, password = cards[uid]
    assert password == shown
    assert url.rstrip("/").endswith(f"/{uid}")
    assert await me_status(cockpit, uid, shown) == 200
    await sheet.close()

    # Fresh passwords, after the organizer confirms: the old one stops working.
    await page.select_option("#sheet-passwords", "reset")
    page.once("dialog", lambda dialog: dialog.accept())
    sheet = await open_sheet(page)
    (_, fresh), *_ = (await sheet_cards(sheet)).values()
    assert fresh != shown
    assert await me_status(cockpit, uid, shown) == 401
    assert await me_status(cockpit, uid, fresh) == 200
    await sheet.close()
    await page.context.close()


async def test_keyboard_sign_in_names_and_phone_width(cockpit: Cockpit) -> None:
    page = await cockpit.page(viewport={"width": 390, "height": 844}, is_mobile=True)
    await page.goto(cockpit.url)
    await page.focus("#login-password")
    await page.keyboard.type(ADMIN_PASSWORD)
    await page.keyboard.press("Enter")  # the form submits from the keyboard
    await page.wait_for_selector("#live[data-live='1']", timeout=UI_TIMEOUT_MS)
    await page.wait_for_selector("#users tbody tr", timeout=UI_TIMEOUT_MS)
    await page.wait_for_selector("#workers tbody tr", timeout=UI_TIMEOUT_MS)
    unnamed = await page.evaluate(
        """() => Array.from(document.querySelectorAll('button, input, select')).filter(el => {
             const name = el.getAttribute('aria-label') || (el.labels && el.labels.length
               && el.labels[0].textContent.trim()) || (el.tagName === 'BUTTON'
               && el.textContent.trim());
             return !name; }).map(el => el.outerHTML)"""
    )
    assert unnamed == []
    controls = await page.evaluate(
        "() => document.querySelectorAll('button, input, select').length"
    )
    assert controls > 20  # the check saw the live rows' controls too
    widths = await page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1], widths
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "admin-dashboard-phone.png"
    await page.screenshot(path=str(shot), full_page=True)
    print(f"dashboard at phone width: {shot}")
    await page.context.close()


async def test_pushed_workflow_lands_on_a_participants_canvas(cockpit: Cockpit) -> None:
    marker = "pushed by the cockpit"
    canvas = await cockpit.page(
        http_credentials={"username": "user002", "password": PASSWORDS["user002"]}
    )
    await canvas.goto(cockpit.stack.url("user002", "/"))
    await canvas.wait_for_function(READY, timeout=60_000)
    page = await cockpit.signed_in()
    await page.wait_for_selector(
        "#push-user option[value='user002']", state="attached", timeout=UI_TIMEOUT_MS
    )
    await page.set_input_files(
        "#push-file",
        files=[{"name": "exercise.json", "mimeType": "application/json",
                "buffer": json.dumps(graph(steps=3, text=marker)).encode()}],
    )  # fmt: skip
    await page.select_option("#push-user", "user002")
    await page.get_by_role("button", name="Push workflow").click()
    await page.wait_for_function(
        "() => document.querySelector('#action-msg').textContent.startsWith('Pushed')",
        timeout=UI_TIMEOUT_MS,
    )
    await canvas.wait_for_function(
        f"""() => app.graph.nodes.some(n => (n.widgets || []).some(
                 w => w.value === {json.dumps(marker)}))""",
        timeout=UI_TIMEOUT_MS,
    )
    # Pasted JSON, to every participant: it reaches the same canvas.
    pasted = "pasted for the whole room"
    await page.set_input_files("#push-file", files=[])
    await page.fill("#push-text", json.dumps(graph(steps=3, text=pasted)))
    await page.select_option("#push-user", "")
    await page.get_by_role("button", name="Push workflow").click()
    await page.wait_for_function(
        "() => document.querySelector('#action-msg').textContent"
        " === 'Pushed the pasted workflow to every participant.'",
        timeout=UI_TIMEOUT_MS,
    )
    await canvas.wait_for_function(
        f"""() => app.graph.nodes.some(n => (n.widgets || []).some(
                 w => w.value === {json.dumps(pasted)}))""",
        timeout=UI_TIMEOUT_MS,
    )
    await canvas.context.close()
    await page.context.close()


async def test_screenshot_under_load(cockpit: Cockpit) -> None:
    page = await cockpit.signed_in()
    clients = {u: cockpit.participant(u) for u in ALL_PASSWORDS}
    try:
        # A few short jobs first, whatever ran before: the ETA needs recent GPU times and the
        # throughput chart ended jobs.
        warm = [await submit(clients["user001"], graph(steps=1)) for _ in range(3)]
        for job in warm:
            await page.wait_for_selector(
                f"tr[data-job='{job}'][data-state='succeeded']", timeout=UI_TIMEOUT_MS
            )

        async def four(client: httpx.AsyncClient) -> list[str]:
            # One after another: the first checks the password, the others hit the queue's
            # cache of it (four at once would hash it four times).
            return [await submit(client, graph(steps=100)) for _ in range(4)]

        jobs = [j for js in await asyncio.gather(*map(four, clients.values())) for j in js]
        assert len(set(jobs)) == 40
        await page.wait_for_function(
            """() => document.querySelectorAll('#jobs tr[data-state="running"]').length === 3
                 && document.querySelectorAll('#jobs tr[data-state="queued"]').length >= 30
                 && document.querySelectorAll('#by-user tbody tr').length >= 10
                 && Array.from(document.querySelectorAll('#jobs tr[data-state="running"] progress'))
                      .every(p => p.value > 0)
                 && document.querySelector('#cost-total').textContent.startsWith('€')
                 && document.querySelector('#cost-hour').textContent === '€1.80'
                 && Number(document.querySelector('#eta-now').dataset.backlog) >= 20
                 && /[0-9]/.test(document.querySelector('#eta-now').textContent)
                 && /[0-9]/.test(document.querySelector('#eta-plus').textContent)
                 && Number(document.querySelector('#chart-done').dataset.done) > 0""",
            timeout=20_000,
        )
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "admin-dashboard.png"
        await page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 20_000
        print(f"dashboard under load: {shot}")
    finally:
        await cockpit.cancel_everything()
        for c in clients.values():
            await c.aclose()
    await page.context.close()
