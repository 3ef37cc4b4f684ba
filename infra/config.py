"""The stack's configuration: read once, validated once, frozen.

Every key is checked here so a typo fails in the first second of `pulumi up`
with the key's name and the command that fixes it, not halfway through a
deploy with a provider error.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.gpu_config import GpuConfigError, GpuSettings, parse_gpu

NAMESPACE = "workshop"

QUEUE_MODES = ("fifo", "fair", "priority")
DIGEST_RE = re.compile(r"^[a-z0-9][a-z0-9._/:-]*@sha256:[0-9a-f]{64}$")
DOMAIN_RE = re.compile(r"^(?=.{4,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
HEX32_RE = re.compile(r"^[0-9a-f]{32}$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
SSH_KEY_RE = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp\d+) [A-Za-z0-9+/=]+( .*)?$")

# Pinned by digest: a tag can be moved under us, a digest cannot.
DEFAULT_REDIS_IMAGE = (
    "redis:7.4-bookworm@sha256:4fa24486b8bcca8eec45ee0eb166edc674795e53a2b53d1a9ef263eecebaac85"
)
DEFAULT_CADDY_IMAGE = (
    "caddy:2.8-alpine@sha256:af32e97399febea808609119bb21544d0265c58a02836576e32a2d082c262c17"
)
MAX_PARTICIPANTS = 999  # user001 .. user999


class ConfigError(ValueError):
    """A configuration key is missing or invalid; the message says how to fix it."""


def _fix(key: str, example: str, secret: bool = False) -> str:
    flag = " --secret" if secret else ""
    if "." in key:
        return f"run: pulumi config set{flag} --path '{NAMESPACE}:{key}' {example}"
    return f"run: pulumi config set{flag} {NAMESPACE}:{key} {example}"


@dataclass(frozen=True)
class WorkshopConfig:
    """Everything the program needs, typed. Built by `load_config`, never mutated."""

    project: str
    stack: str
    domain: str
    cloudflare_zone_id: str
    cloudflare_account_id: str
    participants: int
    admin_emails: tuple[str, ...]
    ssh_public_keys: tuple[str, ...]
    ssh_private_key_file: str
    admin_cidrs: tuple[str, ...]
    admin_password: Any  # pulumi.Output[str] (secret) or None: generated
    participant_passwords: Mapping[str, Any] = field(default_factory=dict)
    vps_type: str = "cx23"
    vps_location: str = "nbg1"
    vps_image: str = "ubuntu-24.04"
    data_volume_gb: int = 10
    swap_gb: int = 2
    queue_mode: str = "fair"
    queue_image: str = ""  # "" = build images/queue.Dockerfile on the VPS
    gateway_image: str = ""  # "" = run the gateway from the queue image
    redis_image: str = DEFAULT_REDIS_IMAGE
    caddy_image: str = DEFAULT_CADDY_IMAGE
    r2_location: str = "weur"
    manage_zone_ssl: bool = True
    gpu: GpuSettings = field(default_factory=GpuSettings)

    @property
    def prefix(self) -> str:
        """Lower-case `<project>-<stack>`, used for every name the clouds see."""
        return re.sub(r"[^a-z0-9-]", "-", f"{self.project}-{self.stack}".lower()).strip("-")

    @property
    def vps_platform(self) -> str:
        """Hetzner's cax* types are Arm (Ampere); everything else is x86."""
        return "linux/arm64" if self.vps_type.startswith("cax") else "linux/amd64"

    @property
    def usernames(self) -> tuple[str, ...]:
        return tuple(f"user{i:03d}" for i in range(1, self.participants + 1))


Getter = Callable[[str], Any]


def _str(get: Getter, key: str, default: str | None, example: str) -> str:
    value = get(key)
    if value is None or value == "":
        if default is None:
            raise ConfigError(f"missing config key '{NAMESPACE}:{key}'; {_fix(key, example)}")
        return default
    if not isinstance(value, str):
        raise ConfigError(f"config key '{NAMESPACE}:{key}' must be a string; {_fix(key, example)}")
    return value.strip()


def _int(get: Getter, key: str, default: int, lo: int, hi: int) -> int:
    raw = get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(str(raw))
    except ValueError:
        raise ConfigError(
            f"config key '{NAMESPACE}:{key}' must be an integer in [{lo}, {hi}], got {raw!r}; "
            + _fix(key, str(default))
        ) from None
    if not lo <= value <= hi:
        raise ConfigError(
            f"config key '{NAMESPACE}:{key}' must be in [{lo}, {hi}], got {value}; "
            + _fix(key, str(default))
        )
    return value


def _list(get: Getter, key: str, example: str) -> tuple[str, ...]:
    raw = get(key)
    if raw is None or raw == "":
        return ()
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raise ConfigError(
                f"config key '{NAMESPACE}:{key}' must be a list; "
                f"run: pulumi config set --path '{NAMESPACE}:{key}[0]' {example}"
            ) from None
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise ConfigError(
            f"config key '{NAMESPACE}:{key}' must be a list of strings; "
            f"run: pulumi config set --path '{NAMESPACE}:{key}[0]' {example}"
        )
    return tuple(x.strip() for x in raw)


def _required_list(get: Getter, key: str, example: str, what: str) -> tuple[str, ...]:
    """A list that must have at least one entry; the error says how to add the first."""
    values = _list(get, key, example)
    if not values:
        raise ConfigError(
            f"missing config key '{NAMESPACE}:{key}' ({what}); "
            f"run: pulumi config set --path '{NAMESPACE}:{key}[0]' {example}"
        )
    return values


def _image(get: Getter, key: str, default: str, example: str) -> str:
    value = _str(get, key, default, example)
    if value and not DIGEST_RE.match(value):
        raise ConfigError(
            f"config key '{NAMESPACE}:{key}' must be an image pinned by digest "
            f"(name@sha256:<64 hex>), not a tag such as ':latest', got {value!r}; "
            + _fix(key, example)
        )
    return value


def load_config(
    get: Getter,
    get_secret: Callable[[str], Any],
    project: str,
    stack: str,
) -> WorkshopConfig:
    """Validate every key; `get` returns raw values (lists/objects parsed), `get_secret` Outputs."""
    domain = _str(get, "domain", None, "workshop.example.org").lower()
    if not DOMAIN_RE.match(domain):
        raise ConfigError(
            f"config key '{NAMESPACE}:domain' is not a valid host name: {domain!r}; "
            + _fix("domain", "workshop.example.org")
        )
    ids = {}
    for key in ("cloudflareZoneId", "cloudflareAccountId"):
        value = _str(get, key, None, "<32-hex-id from the Cloudflare dashboard>").lower()
        if not HEX32_RE.match(value):
            raise ConfigError(
                f"config key '{NAMESPACE}:{key}' must be a 32-character hex id, got {value!r}; "
                + _fix(key, "<32-hex-id from the Cloudflare dashboard>")
            )
        ids[key] = value

    participants = _int(get, "participants", 20, 1, MAX_PARTICIPANTS)

    admin_emails = _required_list(get, "adminEmails", "you@example.org", "tailnet admins")
    for email in admin_emails:
        if not EMAIL_RE.match(email):
            raise ConfigError(
                f"config key '{NAMESPACE}:adminEmails' has an invalid e-mail {email!r}"
            )

    ssh_keys = _required_list(
        get, "sshPublicKeys", '"$(cat ~/.ssh/comfy_workshop.pub)"', "who may SSH as deploy"
    )
    for key in ssh_keys:
        if not SSH_KEY_RE.match(key):
            raise ConfigError(
                f"config key '{NAMESPACE}:sshPublicKeys' holds something that is not an "
                f"OpenSSH public key: {key[:30]!r}..."
            )
    key_file = _str(get, "sshPrivateKeyFile", None, "~/.ssh/comfy_workshop")
    if not Path(key_file).expanduser().is_file():
        raise ConfigError(
            f"config key '{NAMESPACE}:sshPrivateKeyFile' points at {key_file!r}, which is not a "
            f"file (the private half of one of sshPublicKeys); "
            + _fix("sshPrivateKeyFile", "~/.ssh/comfy_workshop")
        )

    cidrs = _required_list(get, "adminCidrs", "203.0.113.7/32", "who may SSH to the VPS")
    for cidr in cidrs:
        try:
            net = ipaddress.ip_network(cidr, strict=True)
        except ValueError:
            raise ConfigError(
                f"config key '{NAMESPACE}:adminCidrs' has an invalid CIDR {cidr!r}"
            ) from None
        if net.prefixlen == 0:
            raise ConfigError(
                f"config key '{NAMESPACE}:adminCidrs' must not open SSH to the world ({cidr}); "
                "list your own address ranges"
            )

    queue_mode = _str(get, "queueMode", "fair", "fair")
    if queue_mode not in QUEUE_MODES:
        raise ConfigError(
            f"config key '{NAMESPACE}:queueMode' must be one of {', '.join(QUEUE_MODES)}, "
            f"got {queue_mode!r}; " + _fix("queueMode", "fair")
        )

    passwords_raw = get("participantPasswords")
    passwords: dict[str, Any] = {}
    if passwords_raw:
        names = json.loads(passwords_raw) if isinstance(passwords_raw, str) else passwords_raw
        if not isinstance(names, dict):
            raise ConfigError(
                f"config key '{NAMESPACE}:participantPasswords' must be an object "
                f"{{userNNN: password}}; run: pulumi config set --secret --path "
                f"'{NAMESPACE}:participantPasswords.user001' <password>"
            )
        valid = {f"user{i:03d}" for i in range(1, participants + 1)}
        for user, pw in names.items():
            if user not in valid:
                raise ConfigError(
                    f"config key '{NAMESPACE}:participantPasswords' names {user!r}, "
                    f"which is not one of user001..user{participants:03d}"
                )
            if not isinstance(pw, str) or len(pw) < 8:
                raise ConfigError(
                    f"config key '{NAMESPACE}:participantPasswords.{user}' must be a string "
                    "of at least 8 characters"
                )
            passwords[user] = pw

    try:
        gpu = parse_gpu(get("gpu"))
    except GpuConfigError as exc:
        raise ConfigError(str(exc)) from None

    r2_location = _str(get, "r2Location", "weur", "weur")
    if r2_location not in ("apac", "eeur", "enam", "weur", "wnam", "oc"):
        raise ConfigError(
            f"config key '{NAMESPACE}:r2Location' must be one of apac, eeur, enam, weur, wnam, "
            f"oc; " + _fix("r2Location", "weur")
        )
    admin_plain = get("adminPassword")
    if admin_plain is not None and (not isinstance(admin_plain, str) or len(admin_plain) < 8):
        # The queue refuses to start with a shorter one (QUEUE_ADMIN_PASSWORD, min 8).
        raise ConfigError(
            f"config key '{NAMESPACE}:adminPassword' must be at least 8 characters; "
            f"run: pulumi config set --secret {NAMESPACE}:adminPassword '<password>' "
            f"(or pulumi config rm {NAMESPACE}:adminPassword to generate one)"
        )
    manage_ssl = get("manageZoneSsl")
    return WorkshopConfig(
        project=project,
        stack=stack,
        domain=domain,
        cloudflare_zone_id=ids["cloudflareZoneId"],
        cloudflare_account_id=ids["cloudflareAccountId"],
        participants=participants,
        admin_emails=admin_emails,
        ssh_public_keys=ssh_keys,
        ssh_private_key_file=str(Path(key_file).expanduser()),
        admin_cidrs=cidrs,
        admin_password=get_secret("adminPassword"),
        participant_passwords=passwords,
        vps_type=_str(get, "vpsType", "cx23", "cx23"),
        vps_location=_str(get, "vpsLocation", "nbg1", "nbg1"),
        vps_image=_str(get, "vpsImage", "ubuntu-24.04", "ubuntu-24.04"),
        data_volume_gb=_int(get, "dataVolumeGb", 10, 10, 10240),
        swap_gb=_int(get, "swapGb", 2, 0, 64),
        queue_mode=queue_mode,
        queue_image=_image(get, "queueImage", "", "ghcr.io/you/comfy-queue@sha256:<digest>"),
        gateway_image=_image(get, "gatewayImage", "", "ghcr.io/you/comfy-gateway@sha256:<digest>"),
        redis_image=_image(get, "redisImage", DEFAULT_REDIS_IMAGE, DEFAULT_REDIS_IMAGE),
        caddy_image=_image(get, "caddyImage", DEFAULT_CADDY_IMAGE, DEFAULT_CADDY_IMAGE),
        r2_location=r2_location,
        manage_zone_ssl=str(manage_ssl).lower() != "false" if manage_ssl is not None else True,
        gpu=gpu,
    )


def from_pulumi() -> WorkshopConfig:
    """Read the current stack's config through pulumi.Config (the only place that does)."""
    import pulumi

    cfg = pulumi.Config(NAMESPACE)

    def get(key: str) -> Any:
        value = cfg.get(key)
        if value is None:
            return None
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return value
        return parsed if isinstance(parsed, (list, dict)) else value

    def get_secret_key(key: str) -> Any:
        return cfg.get_secret(key)

    # participantPasswords is secret: read its plain value once to validate it, then
    # re-wrap each password as a secret Output below in credentials.py.
    def get_all(key: str) -> Any:
        if key == "participantPasswords":
            raw = cfg.get(key)
            return json.loads(raw) if raw else None
        return get(key)

    return load_config(get_all, get_secret_key, pulumi.get_project(), pulumi.get_stack())
