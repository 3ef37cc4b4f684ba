"""One function per command: call the admin API, then show the answer (a table, or the raw
JSON with --json). Each takes the signed-in client and the parsed arguments."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from services.cli import output, workflow
from services.cli.client import AdminClient, CliError, ExitCode
from services.cli.config import Config
from services.contracts import LIVE_STATES, Mode, Role

Command = Callable[[AdminClient, argparse.Namespace, Config], None]
#: The queue checks each given password's hash (tens of ms each, a few at a time).
SHEET_TIMEOUT_S = 300.0


def _seg(value: str) -> str:
    """A path segment as the queue's routes expect it: never a second segment."""
    return quote(value, safe="")


def _show(args: argparse.Namespace, data: Any, human: Callable[[], None]) -> None:
    if args.json:
        output.print_json(data)
    else:
        human()


# -- status -------------------------------------------------------------------------------
def status(c: AdminClient, args: argparse.Namespace, _: Config) -> None:
    ov = c.get("/api/admin/overview")
    if args.json:
        output.print_json(ov)
        return
    jobs = ov.get("jobs", {})
    finished = ov.get("finished", {})
    output.pairs([
        ("queue", c.url),
        ("mode", ov.get("mode")),
        ("paused", ov.get("paused")),
        *((state, jobs.get(state, 0)) for state in LIVE_STATES),
        ("workers", f"{ov.get('workers_alive', 0)} alive, {ov.get('workers_lost', 0)} lost"),
        ("finished", ", ".join(f"{k} {v}" for k, v in sorted(finished.items())) or "none"),
    ])
    live = [j for j in c.get("/api/admin/jobs?limit=1000") if j.get("state") in LIVE_STATES]
    if live:
        print()
        _jobs_table(live)


def _jobs_table(jobs: list[dict[str, Any]]) -> None:
    order = {s: i for i, s in enumerate(("running", "leased", "queued"))}
    jobs = sorted(jobs, key=lambda j: (order.get(j.get("state"), 9), j.get("position") or 0,
                                       j.get("queued_at") or 0))
    output.table(
        ["job", "user", "state", "pos", "worker", "since", "progress"],
        [[j.get("id"), j.get("user"), j.get("state"), j.get("position"), j.get("worker"),
          output.ago(j.get("started_at") or j.get("leased_at") or j.get("queued_at")),
          _progress(j.get("progress"))] for j in jobs],
    )


def _progress(p: dict[str, Any] | None) -> str:
    if not p or not p.get("max"):
        return "-"
    return f"{100 * float(p.get('value', 0)) / float(p['max']):.0f}%"


# -- users --------------------------------------------------------------------------------
def users_list(c: AdminClient, args: argparse.Namespace, _: Config) -> None:
    users = c.get("/api/admin/users")
    _show(args, users, lambda: output.table(
        ["user", "role", "disabled", "running", "daily", "today", "jobs", "gpu s"],
        [[u.get("id"), u.get("role"), u.get("disabled"),
          (u.get("limits") or {}).get("running"), (u.get("limits") or {}).get("daily"),
          (u.get("usage") or {}).get("jobs_today"), (u.get("usage") or {}).get("jobs"),
          (u.get("usage") or {}).get("gpu_s")] for u in users],
    ))


def users_add(c: AdminClient, args: argparse.Namespace, _: Config) -> None:
    body = {"id": args.uid, "role": args.role, "password": args.new_password}
    added = c.post("/api/admin/users", body)
    _show(args, added, lambda: print(
        f"added {added['id']} ({added.get('role')}); password: {added.get('password')}\n"
        "(shown once: the queue keeps only its hash)"
    ))


def users_reset_password(c: AdminClient, args: argparse.Namespace, _: Config) -> None:
    out = c.post(f"/api/admin/users/{_seg(args.uid)}/reset-password",
                 {"password": args.new_password})
    _show(args, out, lambda: print(
        f"new password of {out.get('id')}: {out.get('password')} (their old sessions ended)"
    ))


def users_disable(c: AdminClient, args: argparse.Namespace, _: Config) -> None:
    _toggle(c, args, "disable")


def users_enable(c: AdminClient, args: argparse.Namespace, _: Config) -> None:
    _toggle(c, args, "enable")


def _toggle(c: AdminClient, args: argparse.Namespace, action: str) -> None:
    out = c.post(f"/api/admin/users/{_seg(args.uid)}/{action}")
    _show(args, out, lambda: print(
        f"{out.get('id')} is {'disabled' if out.get('disabled') else 'enabled'}"
    ))


def users_limits(c: AdminClient, args: argparse.Namespace, _: Config) -> None:
    """Without --running/--daily: show them. With one: the other stays as it is."""
    user = next((u for u in c.get("/api/admin/users") if u.get("id") == args.uid), None)
    if user is None:
        raise CliError(f"unknown user {args.uid!r}", ExitCode.UNKNOWN)
    limits = dict(user.get("limits") or {"running": None, "daily": None})
    if args.running is not None or args.daily is not None:
        for name in ("running", "daily"):
            value = getattr(args, name)
            if value is not None:
                limits[name] = None if value in ("default", "none") else int(value)
        user = c.put(f"/api/admin/users/{_seg(args.uid)}/limits",
                     {"running": limits.get("running"), "daily": limits.get("daily")})
        limits = user.get("limits") or limits
    _show(args, user, lambda: output.pairs([
        ("user", user.get("id")),
        ("running", limits.get("running") if limits.get("running") is not None
         else "the queue's default"),
        ("daily", limits.get("daily") if limits.get("daily") is not None else "no limit"),
    ]))


# -- queue --------------------------------------------------------------------------------
def queue_mode(c: AdminClient, args: argparse.Namespace, _: Config) -> None:
    if args.mode is None:
        out = c.get("/api/admin/mode")
    else:
        out = c.put("/api/admin/mode", {"mode": args.mode})
    _show(args, out, lambda: print(f"scheduling mode: {out.get('mode')}"))


def queue_pause(c: AdminClient, args: argparse.Namespace, _: Config) -> None:
    out = c.post("/api/admin/queue/pause")
    _show(args, out, lambda: print(
        "queue paused: no new job starts (submits are still accepted)"
        if out.get("paused") else "queue not paused"
    ))


def queue_resume(c: AdminClient, args: argparse.Namespace, _: Config) -> None:
    out = c.post("/api/admin/queue/resume")
    _show(args, out, lambda: print(
        "queue paused" if out.get("paused") else "queue resumed: jobs start again"
    ))


def queue_cancel(c: AdminClient, args: argparse.Namespace, _: Config) -> None:
    job = c.post(f"/api/jobs/{_seg(args.job)}/cancel")
    _show(args, job, lambda: print(
        f"job {job.get('id')} of {job.get('user')}: "
        + ("cancelled" if job.get("state") == "cancelled"
           else f"{job.get('state')}, its worker is stopping it")
    ))


def queue_bump(c: AdminClient, args: argparse.Namespace, _: Config) -> None:
    job = c.post(f"/api/admin/jobs/{_seg(args.job)}/bump")
    _show(args, job, lambda: print(
        f"job {job.get('id')} of {job.get('user')} is next (position {job.get('position')})"
    ))


def queue_list(c: AdminClient, args: argparse.Namespace, _: Config) -> None:
    path = f"/api/admin/jobs?limit={args.limit}"
    if args.for_user:
        path += f"&user={quote(args.for_user)}"
    jobs = c.get(path)
    if not args.all:
        jobs = [j for j in jobs if j.get("state") in LIVE_STATES]
    _show(args, jobs, lambda: _jobs_table(jobs))


# -- workers ------------------------------------------------------------------------------
def workers_list(c: AdminClient, args: argparse.Namespace, _: Config) -> None:
    workers = c.get("/api/admin/workers")

    def human() -> None:
        rows = []
        for w in workers:
            info, st = w.get("info") or {}, w.get("status") or {}
            comfy = st.get("comfyui") or ("up" if (info.get("comfyui") or {}).get("up")
                                          else "down")
            rows.append([
                w.get("id"), w.get("state"), st.get("state"), w.get("draining"),
                info.get("provider"), info.get("gpu"), comfy, ",".join(w.get("jobs") or [])
                or "-", st.get("jobs_done"), output.ago(w.get("last_seen")),
            ])
        output.table(["worker", "state", "doing", "draining", "provider", "gpu", "comfyui",
                      "jobs", "done", "last seen"], rows)

    _show(args, workers, human)


def workers_drain(c: AdminClient, args: argparse.Namespace, _: Config) -> None:
    out = c.post(f"/api/admin/workers/{_seg(args.worker)}/drain")
    _show(args, out, lambda: print(
        f"worker {out.get('id')} is draining: it finishes what it holds, takes nothing new"
    ))


def workers_undrain(c: AdminClient, args: argparse.Namespace, _: Config) -> None:
    out = c.post(f"/api/admin/workers/{_seg(args.worker)}/undrain")
    _show(args, out, lambda: print(f"worker {out.get('id')} takes jobs again"))


# -- money and time -----------------------------------------------------------------------
def cost(c: AdminClient, args: argparse.Namespace, _: Config) -> None:
    out = c.get("/api/admin/cost")

    def human() -> None:
        output.table(
            ["worker", "eur/hour", "connected", "eur"],
            [[w.get("id"), w.get("hourly_eur"), output.duration(w.get("connected_s")),
              w.get("eur")] for w in out.get("workers", [])],
            empty="(no workers today)",
        )
        print()
        output.pairs([("today so far", f"EUR {out.get('total_eur', 0):.2f}"),
                      ("per hour now", f"EUR {out.get('per_hour_eur', 0):.2f}")])

    _show(args, out, human)


def eta(c: AdminClient, args: argparse.Namespace, _: Config) -> None:
    out = c.get("/api/admin/eta")

    def clears(value: float | None, workers: int) -> str:
        if value is not None:
            return "now (nothing queued)" if value == 0 else "in " + output.duration(value)
        if out.get("job_s") is None:
            return "unknown: no job has finished recently"
        return "never: no worker takes jobs" if workers <= 0 else "unknown"

    _show(args, out, lambda: output.pairs([
        ("backlog", f"{out.get('backlog')} jobs"),
        ("typical job", output.duration(out.get("job_s"))),
        ("workers", out.get("workers")),
        ("clears", clears(out.get("clears_in_s"), out.get("workers") or 0)),
        ("with one more", clears(out.get("clears_in_s_with_one_more"),
                                 (out.get("workers") or 0) + 1)),
    ]))


# -- credentials --------------------------------------------------------------------------
def credentials(c: AdminClient, args: argparse.Namespace, config: Config) -> None:
    """The printable sheet. Passwords: --from FILE, else new ones (--reset, one participant
    at a time with a progress line), else those the stack or local mode knows."""
    wanted = [u for u in (args.users or "").split(",") if u] or None
    passwords: dict[str, str] | None = None
    if args.from_file:
        passwords = _passwords_file(args.from_file)
    elif args.reset:
        passwords = _reset_all(c, wanted)
    elif config.participants:
        passwords = dict(config.participants)
    if passwords is not None and wanted:
        missing = [u for u in wanted if u not in passwords]
        if missing:
            raise CliError(f"no password for {', '.join(missing)}: pass --reset for new ones")
        passwords = {u: passwords[u] for u in wanted}
    users = wanted or (sorted(passwords) if passwords is not None else None)
    body = {"users": users, "reset": False, "passwords": passwords}
    try:
        html = c.call("POST", "/api/admin/credentials-sheet", json=body,
                      timeout_s=max(args.timeout, SHEET_TIMEOUT_S)).text
    except CliError as exc:
        if exc.code == ExitCode.FAILED and "password" in exc.message:
            exc.message += (
                "; --reset gives them new passwords, --from FILE uses known ones"
            )
        raise
    if args.out:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(html)
        count = len(users) if users else "every participant"
        print(f"credentials sheet ({count} cards) written to {args.out}: open it and print")
    else:
        sys.stdout.write(html)


def _reset_all(c: AdminClient, wanted: list[str] | None) -> dict[str, str]:
    if wanted is None:
        wanted = [u["id"] for u in c.get("/api/admin/users")
                  if u.get("role") == Role.PARTICIPANT and not u.get("disabled")]
    progress = output.Progress("resetting passwords", len(wanted))
    passwords: dict[str, str] = {}
    try:
        for uid in wanted:
            out = c.post(f"/api/admin/users/{_seg(uid)}/reset-password", {"password": None})
            passwords[uid] = out["password"]
            progress.step(uid)
    except CliError as exc:
        if passwords:  # those already changed must not be lost with the error
            exc.message += "; passwords already changed: " + ", ".join(
                f"{u} {p}" for u, p in passwords.items()
            )
        raise
    finally:
        progress.close()
    return passwords


def _passwords_file(path: str) -> dict[str, str]:
    """uid -> password from a JSON file: a plain map, local mode's credentials.json
    ("participants"), or `pulumi stack output --json --show-secrets` ("credentials")."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CliError(f"{path}: no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{path}: cannot be read ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise CliError(f"{path} is not JSON: {exc.msg} at line {exc.lineno}") from exc
    if isinstance(data, dict) and isinstance(data.get("credentials"), dict):
        data = data["credentials"]
    if isinstance(data, dict) and isinstance(data.get("participants"), dict):
        data = data["participants"]
    if not isinstance(data, dict) or not data or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise CliError(f'{path}: expected {{"user001": "password", ...}} (or local mode\'s '
                       "credentials.json, or the stack's outputs)")
    return {u: p for u, p in data.items() if u != "admin"}


# -- push ---------------------------------------------------------------------------------
def push_workflow(c: AdminClient, args: argparse.Namespace, _: Config) -> None:
    wf, fmt = workflow.load(args.file)
    out = c.post("/api/admin/push-workflow", {"workflow": wf, "user": args.to_user})
    target = out.get("sent_to") if isinstance(out, dict) else None
    _show(args, out, lambda: print(
        f"{fmt.upper()}-format workflow {args.file} sent to "
        + ("every participant's canvas" if target == "*" else f"{target}'s canvas")
    ))


MODES = [m.value for m in Mode]
ROLES = [r.value for r in Role if r is not Role.ADMIN]
