"""Mandatory policies: what must never be exposed, deleted or written in clear text."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from typing import Any

from pulumi_policy import EnforcementLevel, ReportViolation, ResourceValidationPolicy

from services.contracts import REDIS_PORT

SECRET_ENV = re.compile(r"(PASSWORD|SECRET|TOKEN|USERS|ACCESS_KEY)", re.IGNORECASE)

FIREWALL = "hcloud:index/firewall:Firewall"
CONTAINER = "docker:index/container:Container"
ACL = "tailscale:index/acl:Acl"
BUCKET = "cloudflare:index/r2Bucket:R2Bucket"
GPU_HOST = "comfy:workshop:GpuHost"
VERDA_INSTANCE = "pulumi-python:dynamic/verda:Instance"
LOOPBACK = ("127.0.0.1", "::1", "localhost")
#: The one port a GPU host may have public (SSH, key-only): how Pulumi reaches a rented host.
GPU_SSH_PORT = 22
GPU_SSH_AUTH = "publickey"
RANDOM_PASSWORD = "random:index/randomPassword:RandomPassword"  # noqa: S105 (a type)

# Resource type -> the properties that hold credentials and must be secret outputs.
SECRET_PROPS: dict[str, tuple[str, ...]] = {
    "hcloud:index/server:Server": ("userData",),
    "command:remote:Command": ("stdin",),
    "tailscale:index/tailnetKey:TailnetKey": ("key",),
    "cloudflare:index/apiToken:ApiToken": ("value",),
    VERDA_INSTANCE: ("startupScript",),  # a GPU host's bootstrap: tailnet key, worker token
}


def port_spec_covers(spec: str | None, port: int) -> bool:
    """Does a port spec ("80", "1-65535", "any", "*", "22,80-90", None=all) include `port`?"""
    if spec is None or str(spec).strip() in ("", "*", "any"):
        return True
    for part in str(spec).split(","):
        part = part.strip()
        if "-" in part:
            lo, hi = part.split("-", 1)
            if int(lo) <= port <= int(hi):
                return True
        elif part.isdigit() and int(part) == port:
            return True
    return False


def _is_world(cidr: str) -> bool:
    try:
        return ipaddress.ip_network(cidr, strict=False).prefixlen == 0
    except ValueError:
        return False


def _rules(props: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in props.get("rules") or [] if isinstance(r, dict)]


def validate_firewall_world(args: Any, report: ReportViolation) -> None:
    """Nothing is open to the whole internet: HTTPS comes from Cloudflare's ranges only (a
    world-open 443 would let anyone bypass Cloudflare), SSH from the admins'."""
    if args.resource_type != FIREWALL:
        return
    for rule in _rules(args.props):
        if rule.get("direction", "in") != "in":
            continue
        if any(_is_world(c) for c in rule.get("sourceIps") or []):
            report(
                f"firewall rule opens {rule.get('protocol')}/{rule.get('port')} to the "
                "world; HTTPS may come from Cloudflare's ranges only, SSH from adminCidrs"
            )


def _acl_dst_port(dst: str) -> str:
    # "tag:comfy-vps:8000", "*:*", "100.64.0.1:22", "group:x:0-100,200"
    return dst.rsplit(":", 1)[1] if ":" in dst else "*"


def validate_no_redis(args: Any, report: ReportViolation) -> None:
    if args.resource_type == FIREWALL:
        for rule in _rules(args.props):
            tcp = rule.get("protocol") in ("tcp", None)
            if tcp and port_spec_covers(rule.get("port"), REDIS_PORT):
                report(f"firewall rule {rule.get('port')!r} covers the Redis port {REDIS_PORT}")
    elif args.resource_type == CONTAINER:
        image = str(args.props.get("image", "")) + str(args.props.get("name", ""))
        for port in args.props.get("ports") or []:
            if port.get("internal") == REDIS_PORT or port.get("external") == REDIS_PORT:
                report(f"container {args.name} publishes the Redis port")
            elif "redis" in image:
                report(f"the Redis container {args.name} must not publish any port")
    elif args.resource_type == ACL:
        try:
            doc = json.loads(args.props.get("acl") or "{}")
        except json.JSONDecodeError:
            report("tailnet ACL is not JSON (HuJSON comments are not allowed here)")
            return
        for rule in doc.get("acls", []):
            for dst in rule.get("dst", []):
                if port_spec_covers(_acl_dst_port(dst), REDIS_PORT):
                    report(f"tailnet rule {rule.get('src')} -> {dst} reaches the Redis port")
        for grant in doc.get("grants", []):
            for ip in grant.get("ip", ["*"]):
                if port_spec_covers(ip.split(":")[-1], REDIS_PORT):
                    report(f"tailnet grant {grant.get('src')} -> {ip} reaches the Redis port")


def validate_buckets_retained(args: Any, report: ReportViolation) -> None:
    if args.resource_type == BUCKET and not args.opts.protect:
        report(f"bucket {args.props.get('name')} must be protected (and retained on delete)")


def validate_secrets(args: Any, report: ReportViolation) -> None:
    declared = set(args.opts.additional_secret_outputs or [])
    for prop in SECRET_PROPS.get(args.resource_type, ()):
        if args.props.get(prop) is not None and prop not in declared:
            report(f"{args.resource_type} {args.name}: '{prop}' must be a secret output")
    if args.resource_type == CONTAINER:
        envs = args.props.get("envs") or []
        names = [e.split("=", 1)[0] for e in envs if isinstance(e, str)]
        if any(SECRET_ENV.search(n) for n in names) and "envs" not in declared:
            report(f"container {args.name} carries credentials in 'envs' that are not secret")


def validate_generated_secrets_kept(args: Any, report: ReportViolation) -> None:
    """A generated secret lives only in the state: unprotected, the nightly
    `destroy --exclude-protected` would replace every password and token."""
    if args.resource_type == RANDOM_PASSWORD and not args.opts.protect:
        report(f"generated secret {args.name} must be protected to survive the nightly destroy")


def validate_gpu_idle(args: Any, report: ReportViolation) -> None:
    if args.resource_type != GPU_HOST:
        return
    idle = args.props.get("idleMinutes")
    try:
        ok = idle is not None and int(idle) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        report(f"GPU host {args.name} has no idle limit (idleMinutes > 0)")


def validate_gpu_private(args: Any, report: ReportViolation) -> None:
    """GPU hosts are reached over the tailnet: no public port but SSH with keys only (how
    Pulumi waits for a rented host's bootstrap), ComfyUI on loopback."""
    if args.resource_type != GPU_HOST:
        return
    ports = args.props.get("publicPorts")
    if not isinstance(ports, list | tuple):
        report(f"GPU host {args.name} does not declare its public ports (publicPorts)")
        ports = []
    others = [p for p in ports if p != GPU_SSH_PORT]
    if others:
        report(
            f"GPU host {args.name} opens public ports {others}: only SSH ({GPU_SSH_PORT}, "
            "keys only) may be public; reach everything else over the tailnet"
        )
    if GPU_SSH_PORT in ports and args.props.get("sshAuth") != GPU_SSH_AUTH:
        report(
            f"GPU host {args.name} has public SSH without key-only authentication "
            f"(sshAuth {args.props.get('sshAuth')!r}, not {GPU_SSH_AUTH!r})"
        )
    listen = args.props.get("comfyuiListen")
    if listen not in LOOPBACK:
        report(f"GPU host {args.name} lets ComfyUI listen on {listen!r}, not on loopback")


def _policy(name: str, description: str, fn: Callable[[Any, ReportViolation], None]):
    return ResourceValidationPolicy(
        name=name,
        description=description,
        validate=fn,
        enforcement_level=EnforcementLevel.MANDATORY,
    )


POLICIES = [
    _policy(
        "firewall-closed-to-world",
        "No inbound rule is open to the whole internet (HTTPS from Cloudflare only).",
        validate_firewall_world,
    ),
    _policy(
        "redis-never-exposed",
        "No firewall, container port or tailnet rule reaches Redis.",
        validate_no_redis,
    ),
    _policy(
        "buckets-retained", "R2 buckets are protected and retained.", validate_buckets_retained
    ),
    _policy("secrets-are-secrets", "Credentials are declared as secret outputs.", validate_secrets),
    _policy(
        "generated-secrets-kept",
        "Generated passwords and tokens are protected (they survive the nightly destroy).",
        validate_generated_secrets_kept,
    ),
    _policy("gpu-idle-limit", "Every GPU host carries an idle limit.", validate_gpu_idle),
    _policy(
        "gpu-no-public-port",
        "GPU hosts open no public port but key-only SSH; ComfyUI listens on loopback.",
        validate_gpu_private,
    ),
]
