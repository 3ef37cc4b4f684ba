"""Where the CLI finds the queue and the admin's password, in one place.

Each of URL, user and password comes from the first source that has it: the flags, then the
environment (WORKSHOP_URL, WORKSHOP_ADMIN_USER, WORKSHOP_ADMIN_PASSWORD), then the Pulumi
stack's outputs (when `pulumi` is on PATH: adminUrl and credentials.admin), then local mode's
``data/credentials.json`` (what `make up` wrote; the queue on 127.0.0.1:8000). The stack and
the local file also carry the participants' passwords, which the credentials sheet can use.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.contracts import QUEUE_PORT

ENV_URL = "WORKSHOP_URL"
ENV_USER = "WORKSHOP_ADMIN_USER"
ENV_PASSWORD = "WORKSHOP_ADMIN_PASSWORD"  # noqa: S105 - the variable's name
#: Where `make up` keeps its data (services/local.py reads the same variable).
ENV_DATA_DIR = "COMFY_DATA_DIR"
LOCAL_URL = f"http://127.0.0.1:{QUEUE_PORT}"
DEFAULT_USER = "admin"
PULUMI_TIMEOUT_S = 60.0


class ConfigError(Exception):
    """The CLI cannot work out where the queue is or how to sign in."""


@dataclass
class Source:
    """What one place knows: any of the three values, and participants' passwords."""

    name: str
    url: str | None = None
    user: str | None = None
    password: str | None = None
    participants: dict[str, str] = field(default_factory=dict)


@dataclass
class Config:
    url: str
    user: str
    password: str
    #: Which source each value came from, for error messages ("url": "pulumi stack").
    origin: dict[str, str]
    #: Participants' passwords known to the stack or the local file (uid -> password).
    participants: dict[str, str] = field(default_factory=dict)


def from_flags(url: str | None, user: str | None, password: str | None) -> Source:
    return Source("--url/--user/--password", url, user, password)


def from_env(env: dict[str, str]) -> Source:
    return Source(
        "environment", env.get(ENV_URL) or None, env.get(ENV_USER) or None,
        env.get(ENV_PASSWORD) or None,
    )


def from_pulumi(env: dict[str, str], cwd: Path | None = None) -> Source | None:
    """The stack's outputs, when a `pulumi` executable is on PATH and answers; None otherwise
    (no stack selected, not logged in: the next source is tried)."""
    exe = shutil.which("pulumi", path=env.get("PATH"))
    if exe is None:
        return None
    try:
        done = subprocess.run(
            [exe, "stack", "output", "--json", "--show-secrets"],
            capture_output=True, text=True, timeout=PULUMI_TIMEOUT_S, env=env, cwd=cwd,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    try:
        outputs = json.loads(done.stdout)
    except ValueError:
        return None
    if not isinstance(outputs, dict):
        return None
    creds = outputs.get("credentials") if isinstance(outputs.get("credentials"), dict) else {}
    url = outputs.get("adminUrl") or outputs.get("workshopUrl")
    return Source(
        "pulumi stack outputs",
        url=base_url(url) if isinstance(url, str) else None,
        user=DEFAULT_USER if creds.get("admin") else None,
        password=creds.get("admin") if isinstance(creds.get("admin"), str) else None,
        participants=_passwords(creds.get("participants")),
    )


def from_local(env: dict[str, str], cwd: Path) -> Source | None:
    """Local mode's credentials file (services/local.py), if there is one."""
    path = Path(env.get(ENV_DATA_DIR) or cwd / "data") / "credentials.json"
    if not path.is_absolute():
        path = cwd / path
    try:
        creds = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(creds, dict) or not isinstance(creds.get("admin_password"), str):
        return None
    return Source(
        str(path), url=LOCAL_URL, user=DEFAULT_USER, password=creds["admin_password"],
        participants=_passwords(creds.get("participants")),
    )


def base_url(url: str) -> str:
    """The queue's root from what a person or the stack gives: the admin page's URL
    (https://host/admin/) or the workshop's (https://host/) both mean https://host."""
    url = url.strip().rstrip("/")
    for suffix in ("/admin", "/api"):
        url = url.removesuffix(suffix)
    if "://" not in url:
        url = "http://" + url
    return url


def resolve(
    url: str | None = None,
    user: str | None = None,
    password: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Config:
    """Each value from the first source that has it; the slower sources (a `pulumi` call)
    only when the faster ones left something open."""
    env = dict(os.environ) if env is None else env
    cwd = Path.cwd() if cwd is None else cwd
    sources = [from_flags(url, user, password), from_env(env)]
    values: dict[str, str] = {}
    origin: dict[str, str] = {}
    participants: dict[str, str] = {}

    def take(source: Source) -> None:
        for name in ("url", "user", "password"):
            value = getattr(source, name)
            if value and name not in values:
                values[name], origin[name] = value, source.name
        if not participants:
            participants.update(source.participants)

    for source in sources:
        take(source)
    for later in (lambda: from_pulumi(env, cwd), lambda: from_local(env, cwd)):
        if "url" in values and "password" in values:
            break
        found = later()
        if found is not None:
            take(found)
    if "password" not in values:
        raise ConfigError(
            "no admin password: pass --password, set WORKSHOP_ADMIN_PASSWORD, select the "
            "workshop's Pulumi stack, or run from the folder where `make up` wrote "
            "data/credentials.json"
        )
    values.setdefault("url", LOCAL_URL)
    origin.setdefault("url", "the local-mode default")
    values.setdefault("user", DEFAULT_USER)
    origin.setdefault("user", "the default")
    return Config(
        url=base_url(values["url"]), user=values["user"], password=values["password"],
        origin=origin, participants=participants,
    )


def _passwords(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, str)}
