"""`workshop`: the organizer's command line for the queue's admin API.

Exit status: 0 done, 1 the queue refused (its reason is printed) or a local file is wrong,
2 the queue cannot be reached, 3 the admin sign-in was refused, 4 no such participant, job
or worker, 64 a mistyped command line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from services.cli import commands
from services.cli.client import AdminClient, CliError, ExitCode
from services.cli.config import ConfigError, resolve

EPILOG = """\
where the queue and the admin password come from, first found wins:
  --url/--user/--password, then WORKSHOP_URL, WORKSHOP_ADMIN_USER, WORKSHOP_ADMIN_PASSWORD,
  then `pulumi stack output` (adminUrl, credentials.admin) when pulumi is on PATH,
  then ./data/credentials.json of `make up` (http://127.0.0.1:8000).

exit status: 0 done, 1 refused by the queue, 2 queue unreachable, 3 sign-in refused,
4 unknown participant/job/worker, 64 bad command line.
"""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake exits 64: 2 means "queue unreachable" here."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message}\n")


def _common(json_only: bool = False) -> argparse.ArgumentParser:
    """Options every command also takes after its name (`workshop users list --json`)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                   help="print the queue's raw JSON answer (for scripts)")
    if not json_only:
        p.add_argument("--url", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        p.add_argument("--password", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return p


def build_parser() -> Parser:
    root = Parser(prog="workshop", description=__doc__.splitlines()[0],
                  epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    root.add_argument("--url", help="the queue (https://host/ or the admin URL)")
    root.add_argument("--user", "--admin-user", dest="admin_user",
                      help="the admin's name (default admin)")
    root.add_argument("--password", help="the admin's password")
    root.add_argument("--json", action="store_true", help="print the raw JSON (for scripts)")
    root.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    sub = root.add_subparsers(dest="command", required=True, metavar="COMMAND",
                              parser_class=Parser)
    common = [_common()]

    def leaf(parent: argparse._SubParsersAction, name: str, func: commands.Command,
             help_: str) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help_, description=help_, parents=common)
        p.set_defaults(func=func)
        return p

    leaf(sub, "status", commands.status, "the queue at a glance: mode, jobs, workers")

    users = sub.add_parser("users", help="participants: list, add, passwords, limits")
    us = users.add_subparsers(dest="action", required=True, metavar="ACTION",
                              parser_class=Parser)
    leaf(us, "list", commands.users_list, "every user with role, limits and usage")
    p = leaf(us, "add", commands.users_add, "add a participant (password generated if none)")
    p.add_argument("uid")
    p.add_argument("--role", choices=commands.ROLES, default="participant")
    p.add_argument("--new-password", dest="new_password", default=None,
                   help="their password (default: a generated one, shown once)")
    p = leaf(us, "reset-password", commands.users_reset_password,
             "give a user a new password; their sessions end")
    p.add_argument("uid")
    p.add_argument("--new-password", dest="new_password", default=None)
    p = leaf(us, "disable", commands.users_disable, "stop a user signing in or submitting")
    p.add_argument("uid")
    p = leaf(us, "enable", commands.users_enable, "let a disabled user back in")
    p.add_argument("uid")
    p = leaf(us, "limits", commands.users_limits,
             "show or set a user's limits (jobs at once, jobs per UTC day)")
    p.add_argument("uid")
    p.add_argument("--running", metavar="N|default", type=_limit("default"),
                   help="jobs at once (default: the queue's)")
    p.add_argument("--daily", metavar="N|none", type=_limit("none"),
                   help="jobs submitted per UTC day (none: no limit)")

    queue = sub.add_parser("queue", help="scheduling mode, pause, cancel, bump")
    qs = queue.add_subparsers(dest="action", required=True, metavar="ACTION",
                              parser_class=Parser)
    p = leaf(qs, "mode", commands.queue_mode, "show or switch the scheduling mode")
    p.add_argument("mode", nargs="?", choices=commands.MODES)
    leaf(qs, "pause", commands.queue_pause, "start no new job (submits still accepted)")
    leaf(qs, "resume", commands.queue_resume, "start jobs again")
    p = leaf(qs, "cancel", commands.queue_cancel, "cancel any job")
    p.add_argument("job")
    p = leaf(qs, "bump", commands.queue_bump, "put a queued job before every other")
    p.add_argument("job")
    p = leaf(qs, "list", commands.queue_list, "jobs waiting or running (--all: also ended)")
    p.add_argument("--all", action="store_true")
    p.add_argument("--for", dest="for_user", metavar="UID", help="one participant's jobs")
    p.add_argument("--limit", type=int, default=200)

    workers = sub.add_parser("workers", help="GPU workers: list, drain")
    ws = workers.add_subparsers(dest="action", required=True, metavar="ACTION",
                                parser_class=Parser)
    leaf(ws, "list", commands.workers_list, "every worker: state, GPU, ComfyUI, jobs")
    p = leaf(ws, "drain", commands.workers_drain,
             "let a worker finish what it holds and lease nothing new")
    p.add_argument("worker")
    p = leaf(ws, "undrain", commands.workers_undrain, "let a drained worker take jobs again")
    p.add_argument("worker")

    leaf(sub, "cost", commands.cost, "what the GPUs have cost today, and per hour now")
    leaf(sub, "eta", commands.eta, "when the backlog clears, now and with one more worker")

    p = leaf(sub, "credentials", commands.credentials,
             "the printable credentials sheet (HTML, one card per participant)")
    p.add_argument("--html", action="store_true", help="HTML (the only format; default)")
    p.add_argument("--out", metavar="FILE", help="write it here (default: standard output)")
    p.add_argument("--reset", action="store_true",
                   help="give each participant a new password first")
    p.add_argument("--from", dest="from_file", metavar="FILE",
                   help="passwords from this JSON file ({uid: password}, local mode's "
                        "credentials.json, or the stack's outputs)")
    p.add_argument("--users", metavar="U1,U2", help="only these participants")

    p = sub.add_parser("push-workflow", help="load a workflow onto participants' canvases",
                       parents=[_common()])
    p.set_defaults(func=commands.push_workflow)
    p.add_argument("file", help="a ComfyUI workflow, UI or API format (JSON)")
    p.add_argument("--user", dest="to_user", metavar="UID",
                   help="only this participant (default: everyone)")
    return root


def _limit(word: str) -> Callable[[str], str]:
    """An argparse type: a whole number, or the word that means "no number"."""
    def parse(value: str) -> str:
        if value == word or (value.isdigit() and int(value) >= 0):
            return value
        raise argparse.ArgumentTypeError(f"expected a whole number or {word!r}, not {value!r}")

    return parse


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the exit status says how it went (never a traceback)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a mistyped command line (64), already printed
        return exc.code if isinstance(exc.code, int) else ExitCode.USAGE
    try:
        config = resolve(args.url, args.admin_user, args.password)
        with AdminClient(config.url, config.user, config.password, args.timeout) as client:
            args.func(client, args, config)
    except ConfigError as exc:
        return _fail(str(exc), ExitCode.REFUSED_LOGIN)
    except CliError as exc:
        return _fail(exc.message, exc.code)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except BrokenPipeError:
        return 0
    except Exception as exc:  # the promise: a message, never a traceback
        return _fail(f"unexpected {type(exc).__name__}: {exc} (a bug in the workshop CLI)",
                     ExitCode.FAILED)
    return ExitCode.OK


def _fail(message: str, code: int) -> int:
    print(f"workshop: {message}", file=sys.stderr)
    return int(code)


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
