"""The official ComfyUI frontend in real headless Chromium, through the gateway, as user001:
it boots with no console errors caused by the server, queues a graph with the Run button,
shows progress, loads the output image, and after a reload the saved workflow and the
history are there. A screenshot is saved under the test's tmp dir. Behind the gateway: the
queue, the real worker (`services.worker`) and a ComfyUI double."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.gateway_harness import PASSWORDS, start_stack
from tests.test_gateway_api_client import GRAPH
from tests.worker_harness import running_worker, worker_settings

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
#: The frontend's own errors (FRONTEND.md): release notes from api.comfy.org (offline here),
#: a settings-registration bug, and the 404s a new user's first load tolerates.
KNOWN_FRONTEND_ERRORS = (
    "api.comfy.org",
    "Cannot read properties of undefined (reading 'id')",
    "Failed to load resource: the server responded with a status of 404",
    "net::ERR_",
)

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="scripts/install-test-packages.sh"),
]

#: What the extension's describe() says about a participant's one job (workshop.js).
BADGE_LINE = re.compile(
    r"Your job is running\.|Your next job is #\d+ in the shared queue \(\d+ waiting\)"
    r"(, starts in (under a minute|about \d+ minutes?))?\."
)

READY = """() => window.app && window.graph && app.api && app.api.socket
  && app.api.socket.readyState === 1
  && document.querySelector('[data-testid="queue-button"]') !== null"""


async def test_frontend_runs_a_graph_in_chromium(
    redis_url: str, tmp_path: Path, comfy: Any
) -> None:
    from playwright.async_api import async_playwright

    comfy.timing.node_time_s["ImageInvert"] = 0.5  # long enough to see it run
    files = tmp_path / "files"
    async with (
        start_stack(redis_url, files, precompress=True,
                    asset_cache_dir=tmp_path.parent.parent / "frontend-cache") as stack,
        running_worker(worker_settings(stack.queue, comfy.url, {"dir": str(files)})),
        async_playwright() as pw,
    ):  # fmt: skip
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = await browser.new_context(
            http_credentials={"username": "user001", "password": PASSWORDS["user001"]},
            viewport={"width": 1400, "height": 900},
        )
        page = await context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        failed: list[str] = []
        page.on(
            "response",
            lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 500 else None,
        )
        await page.goto(stack.url("user001", "/"))
        await page.wait_for_function(READY, timeout=60_000)
        await page.evaluate(
            """() => { window.__seen = [];
              for (const t of ['execution_start', 'executing', 'progress_state', 'executed',
                               'execution_success'])
                app.api.addEventListener(t, () => window.__seen.push(t));
              window.__titles = [];  // the frontend shows a running prompt's progress there
              new MutationObserver(() => window.__titles.push(document.title))
                .observe(document.querySelector('title'), {childList: true});
              window.__badge = [];  // the workshop extension's place in the shared queue
              new MutationObserver(() => {
                const el = document.getElementById('workshop-queue');
                const text = el ? el.textContent : null;
                if (text !== null && window.__badge.at(-1) !== text) window.__badge.push(text);
              }).observe(document.body, {childList: true, subtree: true, characterData: true}); }"""
        )
        # A new participant is greeted by the templates dialog: wait for it, close it as
        # they would, and wait until it is gone and the canvas is free.
        dialog = page.locator(".p-dialog-mask")
        await dialog.first.wait_for(state="visible", timeout=30_000)
        await page.keyboard.press("Escape")
        await dialog.first.wait_for(state="detached", timeout=30_000)
        await page.evaluate("graph => app.loadApiJson(graph, 'browser.json')", GRAPH)
        async with page.expect_response(
            lambda r: "/user001/api/view" in r.url and "api_client" in r.url and r.status == 200,
            timeout=60_000,
        ):
            await page.click('[data-testid="queue-button"]')
        await page.wait_for_function(
            "() => window.__seen.includes('execution_success')", timeout=60_000
        )
        seen = await page.evaluate("() => window.__seen")
        assert "progress_state" in seen and "executing" in seen and "executed" in seen
        titles = await page.evaluate("() => window.__titles")
        assert any("%]" in t for t in titles), titles  # "[50%]…": progress on screen
        # The extension's badge told the participant where their job stood (a worker is
        # connected: its place in the shared queue, or that it runs), then hid once it ended.
        await page.wait_for_function(
            """() => { const el = document.getElementById('workshop-queue');
                 return el && el.textContent === '' && el.style.display === 'none'; }""",
            timeout=15_000,
        )
        badge = await page.evaluate("() => window.__badge")
        told = [t for t in badge if BADGE_LINE.fullmatch(t)]
        assert told, badge
        assert not any("No GPU worker" in t for t in badge), badge
        await page.wait_for_function(
            """() => app.graph.nodes.some(n => n.type === 'SaveImage' && n.imgs
                 && n.imgs.some(i => i.src.includes('/api/view') && i.complete
                                     && i.naturalWidth === 64))""",
            timeout=30_000,
        )
        shot = tmp_path / "user001-after-run.png"
        await page.screenshot(path=str(shot))
        assert shot.stat().st_size > 10_000

        # Save the workflow as the frontend does (its userdata API), then reload.
        saved = await page.evaluate(
            """async () => { const r = await app.api.storeUserData('workflows/browser.json',
                 JSON.stringify(app.graph.serialize()), {overwrite: true, stringify: false});
               return r.status; }"""
        )
        assert saved == 200
        await page.reload()
        await page.wait_for_function(READY, timeout=60_000)
        await page.wait_for_function(  # the workflow is back on the canvas
            "() => app.graph.nodes.some(n => n.type === 'SaveImage')", timeout=30_000
        )
        files = await page.evaluate("() => app.api.listUserDataFullInfo('workflows')")
        assert [f["path"] for f in files] == ["browser.json"]
        history = await page.evaluate("async () => await app.api.getHistory()")
        assert history["History"], history
        entry = history["History"][0]
        assert entry["status"]["status_str"] == "success"
        await page.screenshot(path=str(tmp_path / "user001-after-reload.png"))
        await browser.close()

    server_errors = [e for e in errors if not any(k in e for k in KNOWN_FRONTEND_ERRORS)]
    assert server_errors == [], server_errors
    assert failed == [], failed
