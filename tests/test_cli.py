"""The `workshop` command line against a running queue (real Redis, real HTTP): every command,
its readable and --json output, and its failures (queue unreachable: 2, admin password
refused: 3, unknown participant/job/worker: 4, never a traceback). The CLI runs in-process
(in a thread: the queue answers on this test's event loop), and once as the installed
`workshop` executable."""

from __future__ import annotations

import asyncio
import io
import json
import re
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.cli.__main__ import main
from services.cli.config import ENV_DATA_DIR, ENV_PASSWORD, ENV_URL, ENV_USER
from services.cli.output import Progress
from services.contracts import EventType
from services.local_redis import free_port
from tests.queue_harness import (
    ADMIN_PASSWORD,
    PASSWORDS,
    WORKFLOW,
    QueueHarness,
    events,
    submit_many,
)

pytestmark = pytest.mark.timeout(60)

UI_WORKFLOW = {"last_node_id": 1, "last_link_id": 0, "version": 0.4,
               "nodes": [{"id": 1, "type": "EmptyImage", "pos": [0, 0]}], "links": []}


@dataclass
class Run:
    rc: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


Cli = Callable[..., Awaitable[Run]]


@pytest.fixture
def cli(queue: QueueHarness, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Cli:
    """`await cli("users", "list")`: the CLI signed in as the test queue's admin."""
    for var in (ENV_URL, ENV_USER, ENV_PASSWORD):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(ENV_DATA_DIR, str(tmp_path / "no-local-data"))

    async def run(*argv: str, url: str | None = None, password: str = ADMIN_PASSWORD) -> Run:
        args = ["--url", url or queue.base_url, "--password", password, *argv]
        rc = await asyncio.to_thread(main, args)
        got = capsys.readouterr()
        assert "Traceback" not in got.err
        return Run(rc, got.out, got.err)

    return run


async def _login(queue: QueueHarness, user: str, password: str) -> int:
    async with httpx.AsyncClient(base_url=queue.base_url) as http:
        r = await http.post("/api/auth/token", json={"username": user, "password": password})
        return r.status_code


async def _register(queue: QueueHarness, name: str, hourly_eur: float) -> str:
    http = await queue.client(name)
    r = await http.post("/api/worker/register",
                        json={"instance": "gpu-a", "gpu": "H200", "hourly_eur": hourly_eur})
    r.raise_for_status()
    await http.aclose()
    return r.json()["worker_id"]


# -- status -------------------------------------------------------------------------------
async def test_status_shows_mode_pause_counts_and_live_jobs(
    cli: Cli, queue: QueueHarness
) -> None:
    ids = await submit_many(await queue.client("alice"), 2)
    assert (await cli("queue", "pause")).rc == 0
    run = await cli("status")
    assert run.rc == 0, run.err
    assert re.search(r"^paused\s+yes$", run.out, re.M)
    assert re.search(r"^queued\s+2$", run.out, re.M)
    assert all(job in run.out for job in ids) and "alice" in run.out
    data = (await cli("--json", "status")).json()
    assert data["paused"] is True and data["jobs"]["queued"] == 2
    assert (await cli("status", "--json")).json() == data  # --json after the command too


# -- users --------------------------------------------------------------------------------
async def test_users_list_add_reset_disable_enable(cli: Cli, queue: QueueHarness) -> None:
    run = await cli("users", "list")
    assert run.rc == 0 and re.search(r"^alice\s+participant\s+no", run.out, re.M), run.out
    assert {u["id"] for u in (await cli("users", "list", "--json")).json()} >= set(PASSWORDS)

    run = await cli("users", "add", "user021")
    assert run.rc == 0, run.err
    password = re.search(r"password: (\S+)", run.out).group(1)
    assert await _login(queue, "user021", password) == 200
    added = (await cli("users", "add", "teacher", "--role", "instructor",
                       "--new-password", "chalk-board", "--json")).json()
    assert added == {"id": "teacher", "role": "instructor", "password": "chalk-board"}
    run = await cli("users", "add", "alice")
    assert run.rc == 1 and "exists" in run.err

    out = (await cli("users", "reset-password", "alice", "--json")).json()
    assert out["id"] == "alice" and await _login(queue, "alice", out["password"]) == 200
    assert await _login(queue, "alice", PASSWORDS["alice"]) == 401

    run = await cli("users", "disable", "bob")
    assert run.rc == 0 and "bob is disabled" in run.out
    assert await _login(queue, "bob", PASSWORDS["bob"]) != 200
    run = await cli("users", "enable", "bob")
    assert run.rc == 0 and "bob is enabled" in run.out
    assert await _login(queue, "bob", PASSWORDS["bob"]) == 200


async def test_user_limits_show_and_set_one_at_a_time(cli: Cli) -> None:
    run = await cli("users", "limits", "alice")
    assert run.rc == 0 and "the queue's default" in run.out and "no limit" in run.out
    out = (await cli("users", "limits", "alice", "--running", "2", "--daily", "5",
                     "--json")).json()
    assert out["limits"] == {"running": 2, "daily": 5}
    out = (await cli("users", "limits", "alice", "--daily", "none", "--json")).json()
    assert out["limits"] == {"running": 2, "daily": None}  # running kept
    run = await cli("users", "limits", "alice")
    assert re.search(r"^running\s+2$", run.out, re.M) and "no limit" in run.out
    run = await cli("users", "limits", "alice", "--running", "0")  # the queue's bounds
    assert run.rc == 1 and "running" in run.err
    run = await cli("users", "limits", "alice", "--daily", "lots")  # the command line's
    assert run.rc == 64 and "expected a whole number" in run.err


async def test_an_unknown_participant_is_exit_4_with_the_queues_reason(cli: Cli) -> None:
    for argv in (("users", "reset-password", "nobody"), ("users", "disable", "nobody"),
                 ("users", "enable", "nobody"), ("users", "limits", "nobody")):
        run = await cli(*argv)
        assert run.rc == 4, (argv, run.err)
        assert "unknown user 'nobody'" in run.err, (argv, run.err)


# -- queue --------------------------------------------------------------------------------
async def test_queue_mode_pause_resume(cli: Cli, queue: QueueHarness) -> None:
    run = await cli("queue", "mode")
    assert run.rc == 0 and run.out.startswith("scheduling mode: ")
    assert (await cli("queue", "mode", "priority", "--json")).json() == {"mode": "priority"}
    assert "priority" in (await cli("queue", "mode")).out
    assert (await cli("queue", "mode", "random")).rc == 64

    run = await cli("queue", "pause")
    assert run.rc == 0 and "queue paused" in run.out
    admin = await queue.client("admin")
    assert (await admin.get("/api/admin/overview")).json()["paused"] is True
    assert (await cli("queue", "resume", "--json")).json() == {"paused": False}
    assert (await admin.get("/api/admin/overview")).json()["paused"] is False


async def test_queue_bump_and_cancel(cli: Cli, queue: QueueHarness) -> None:
    first, _, third = await submit_many(await queue.client("alice"), 3)
    run = await cli("queue", "bump", third)
    assert run.rc == 0 and f"job {third} of alice is next" in run.out, run.out
    listed = (await cli("queue", "list", "--json")).json()
    assert {j["id"]: j["position"] for j in listed}[third] == 1

    run = await cli("queue", "cancel", first)
    assert run.rc == 0 and "cancelled" in run.out
    run = await cli("queue", "bump", first)
    assert run.rc == 1 and "only a queued job can be bumped" in run.err
    assert first not in (await cli("queue", "list")).out
    assert first in (await cli("queue", "list", "--all")).out

    for action in ("cancel", "bump"):
        run = await cli("queue", action, "no-such-job")
        assert run.rc == 4 and "no job 'no-such-job'" in run.err


# -- workers ------------------------------------------------------------------------------
async def test_workers_list_drain_undrain(cli: Cli, queue: QueueHarness) -> None:
    worker = await _register(queue, "w0", 2.5)
    run = await cli("workers", "list")
    assert run.rc == 0 and worker in run.out and "H200" in run.out
    out = (await cli("workers", "drain", worker, "--json")).json()
    assert out["id"] == worker and out["draining"] is True
    assert [w["draining"] for w in (await cli("workers", "list", "--json")).json()] == [True]
    run = await cli("workers", "undrain", worker)
    assert run.rc == 0 and "takes jobs again" in run.out
    assert [w["draining"] for w in (await cli("workers", "list", "--json")).json()] == [False]
    run = await cli("workers", "drain", "no-such-worker")
    assert run.rc == 4 and "no worker 'no-such-worker'" in run.err


# -- money and time -----------------------------------------------------------------------
async def test_cost_and_eta(cli: Cli, queue: QueueHarness) -> None:
    worker = await _register(queue, "w1", 3.6)
    await submit_many(await queue.client("alice"), 2)
    out = (await cli("cost", "--json")).json()
    assert out["per_hour_eur"] == pytest.approx(3.6)
    assert [(w["id"], w["hourly_eur"]) for w in out["workers"]] == [(worker, 3.6)]
    run = await cli("cost")
    assert run.rc == 0 and worker in run.out and "EUR 3.60" in run.out

    out = (await cli("eta", "--json")).json()
    assert out["backlog"] == 2 and out["workers"] == 1 and out["job_s"] is None
    run = await cli("eta")
    assert run.rc == 0 and re.search(r"^backlog\s+2 jobs$", run.out, re.M), run.out
    assert re.search(r"^clears\s+unknown: no job has finished recently$", run.out, re.M)

    # One job done in 30 GPU seconds: one left, 30 s with this worker, 15 s with two.
    http = await queue.client("w1")
    held = (await http.post("/api/worker/lease", json={"worker_id": worker})).json()["lease"]
    r = await http.post(f"/api/worker/jobs/{held['job']['id']}/complete", json={
        "worker_id": worker, "lease_id": held["lease_id"], "outputs": {}, "gpu_ms": 30_000})
    assert r.status_code == 204, r.text
    await http.aclose()
    run = await cli("eta")
    assert re.search(r"^typical job\s+30 s$", run.out, re.M), run.out
    assert re.search(r"^clears\s+in 30 s$", run.out, re.M)
    assert re.search(r"^with one more\s+in 15 s$", run.out, re.M)
    assert (await cli("workers", "drain", worker)).rc == 0  # no worker takes jobs now
    run = await cli("eta")
    assert re.search(r"^clears\s+never: no worker takes jobs$", run.out, re.M), run.out
    assert re.search(r"^with one more\s+in 30 s$", run.out, re.M)


# -- credentials --------------------------------------------------------------------------
def _cards(html: str) -> dict[str, str]:
    users = re.findall(r'<dd class="user">([^<]+)</dd>', html)
    passwords = re.findall(r'<dd class="password">([^<]+)</dd>', html)
    return dict(zip(users, passwords, strict=True))


async def test_credentials_sheet_from_a_file_and_with_reset(
    cli: Cli, queue: QueueHarness, tmp_path: Path
) -> None:
    known = tmp_path / "known.json"
    known.write_text(json.dumps({"participants": {u: PASSWORDS[u] for u in ("alice", "bob")}}))
    run = await cli("credentials", "--html", "--from", str(known))
    assert run.rc == 0, run.err
    assert _cards(run.out) == {"alice": "alice-password", "bob": "bob-password"}
    assert f"{queue.base_url}/alice/" in run.out
    run = await cli("credentials", "--from", str(known), "--users", "bob")
    assert run.rc == 0 and _cards(run.out) == {"bob": "bob-password"}
    run = await cli("credentials", "--from", str(known), "--users", "bob,carol")
    assert run.rc == 1 and "no password for carol" in run.err

    sheet = tmp_path / "sheet.html"
    run = await cli("credentials", "--html", "--reset", "--out", str(sheet))
    assert run.rc == 0, run.err
    assert "resetting passwords: 2/2 done" in run.err and str(sheet) in run.out
    cards = _cards(sheet.read_text())
    assert set(cards) == {"alice", "bob"}  # participants only (carol is an instructor)
    assert sheet.stat().st_mode & 0o077 == 0  # passwords: not readable by others
    for user, password in cards.items():
        assert await _login(queue, user, password) == 200
        assert await _login(queue, user, PASSWORDS[user]) == 401

    run = await cli("credentials", "--html", "--from", str(known))  # stale now
    assert run.rc == 1 and "not the current password" in run.err


async def test_credentials_without_passwords_says_how_to_get_them(
    cli: Cli, tmp_path: Path
) -> None:
    run = await cli("credentials", "--html")
    assert run.rc == 1 and "password hashes" in run.err and "--reset" in run.err
    run = await cli("credentials", "--from", str(tmp_path / "missing.json"))
    assert run.rc == 1 and "no such file" in run.err
    (tmp_path / "bad.json").write_text("{not json")
    run = await cli("credentials", "--from", str(tmp_path / "bad.json"))
    assert run.rc == 1 and "is not JSON" in run.err
    run = await cli("credentials", "--reset", "--users", "nobody")
    assert run.rc == 4 and "unknown user 'nobody'" in run.err


# -- push-workflow ------------------------------------------------------------------------
async def test_push_workflow_ui_and_api_format(
    cli: Cli, queue: QueueHarness, tmp_path: Path
) -> None:
    ui, api = tmp_path / "ui.json", tmp_path / "api.json"
    ui.write_text(json.dumps(UI_WORKFLOW))
    api.write_text(json.dumps(WORKFLOW))
    async with events(queue, "alice") as stream:
        run = await cli("push-workflow", str(ui))
        assert run.rc == 0 and "UI-format" in run.out and "every participant" in run.out
        event = await stream.until(lambda e: e.get("type") == EventType.PUSH_WORKFLOW)
        assert event["data"]["workflow"] == UI_WORKFLOW
        out = (await cli("push-workflow", str(api), "--user", "alice", "--json")).json()
        assert out == {"sent_to": "alice"}
        event = await stream.until(lambda e: e.get("type") == EventType.PUSH_WORKFLOW)
        assert event["data"]["workflow"] == WORKFLOW


async def test_push_workflow_refuses_bad_files_and_unknown_users(
    cli: Cli, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"nodes": [')
    run = await cli("push-workflow", str(bad))
    assert run.rc == 1 and "is not JSON" in run.err and "line 1" in run.err
    bad.write_text(json.dumps({"nodes": []}))  # UI format without links
    run = await cli("push-workflow", str(bad))
    assert run.rc == 1 and "is not a ComfyUI workflow" in run.err
    run = await cli("push-workflow", str(tmp_path / "missing.json"))
    assert run.rc == 1 and "no such file" in run.err
    good = tmp_path / "good.json"
    good.write_text(json.dumps(WORKFLOW))
    run = await cli("push-workflow", str(good), "--user", "nobody")
    assert run.rc == 4 and "unknown user 'nobody'" in run.err


# -- failures -----------------------------------------------------------------------------
async def test_an_unreachable_queue_is_exit_2(cli: Cli) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    run = await cli("status", url=url)
    assert run.rc == 2 and run.err.startswith(f"workshop: cannot reach the queue at {url}: ")


async def test_a_wrong_admin_password_is_exit_3(cli: Cli) -> None:
    run = await cli("users", "list", password="not-the-password")
    assert run.rc == 3 and "the admin password was refused" in run.err and run.out == ""


async def test_a_mistyped_command_line_is_exit_64(cli: Cli) -> None:
    assert (await cli("users", "rename", "alice")).rc == 64
    assert (await cli("queue", "cancel")).rc == 64


async def test_the_installed_workshop_command(queue: QueueHarness) -> None:
    exe = Path(sys.executable).parent / "workshop"
    assert exe.is_file(), "the workshop entry point is not installed: run `uv sync`"
    proc = await asyncio.create_subprocess_exec(
        str(exe), "status", "--json",
        env={"PATH": "/usr/bin:/bin", "WORKSHOP_URL": queue.base_url,
             "WORKSHOP_ADMIN_PASSWORD": ADMIN_PASSWORD},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert json.loads(out)["paused"] is False


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_redrawn_on_a_terminal_and_one_line_elsewhere() -> None:
    tty, log = _Terminal(), io.StringIO()
    for stream in (tty, log):
        progress = Progress("resetting passwords", 2, stream)
        progress.step("user001")
        progress.step("user002")
        progress.close()
    assert "\r" in tty.getvalue() and "2/2 user002" in tty.getvalue()
    assert tty.getvalue().endswith("resetting passwords: 2/2 done\n")
    assert log.getvalue() == "resetting passwords: 2/2 done\n"
