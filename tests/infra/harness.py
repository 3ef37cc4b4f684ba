"""Run the Pulumi program under mocks and record every registration it makes."""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import MockCallArgs, MockResourceArgs, Mocks

from infra.config import WorkshopConfig, load_config
from infra.program import build

ZONE = "0123456789abcdef0123456789abcdef"
ACCOUNT = "fedcba9876543210fedcba9876543210"
VPS_IPV4 = "203.0.113.10"
VPS_IPV6 = "2001:db8::1"
TAILNET_IP = "100.64.0.7"
GPU_TAILNET_IP = "100.64.1.1"
WORKER_IMAGE = "ghcr.io/example/comfy-workshop/worker@sha256:" + "d" * 64
VERDA_INSTANCE = "pulumi-python:dynamic/verda:Instance"
VERDA_EUR_PER_HOUR = 2.38


@dataclass
class Registration:
    """One resource as the program declared it (options) and the engine saw it (inputs)."""

    type: str
    name: str
    inputs: dict[str, Any] = field(default_factory=dict)
    provider: str | None = None
    depends_on: list[str] = field(default_factory=list)  # "type::name" keys
    parent: str | None = None
    protect: bool = False
    retain_on_delete: bool = False
    delete_before_replace: bool = False
    replace_on_changes: list[str] = field(default_factory=list)
    additional_secret_outputs: list[str] = field(default_factory=list)
    secret_inputs: set[str] = field(default_factory=set)  # inputs that arrived as secrets
    id: str | None = None  # the id the mocks gave it

    @property
    def key(self) -> str:
        return f"{self.type}::{self.name}"


SECRET_SIG = "4dabf18193072939515e22adb298388d"


def _is_secret(v: Any) -> bool:
    return isinstance(v, dict) and v.get(SECRET_SIG) == "1b47061264138c4ac30d75fd1eb44270"


def _has_secret(v: Any) -> bool:
    if _is_secret(v):
        return True
    if isinstance(v, dict):
        return any(_has_secret(x) for x in v.values())
    if isinstance(v, list):
        return any(_has_secret(x) for x in v)
    return False


def _unwrap(v: Any) -> Any:
    """Secret-wrapped values as the plain values the provider would receive."""
    if _is_secret(v):
        return _unwrap(v["value"])
    if isinstance(v, dict):
        return {k: _unwrap(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_unwrap(x) for x in v]
    return v


class RecordingMocks(Mocks):
    """Returns plausible provider outputs and records the resolved inputs."""

    def __init__(self) -> None:
        self.inputs: dict[str, MockResourceArgs] = {}
        self.ids: dict[str, str] = {}

    def new_resource(self, args: MockResourceArgs):
        # Numeric (hcloud ids are ints) and derived from the name, so two builds of different
        # configs give a resource the same id: their registrations can be compared.
        digest = hashlib.sha256(f"{args.typ}::{args.name}".encode()).hexdigest()
        rid = str(int(digest[:12], 16))
        self.inputs[f"{args.typ}::{args.name}"] = args
        state = dict(args.inputs)
        t = args.typ
        if t == "hcloud:index/server:Server":
            state |= {"ipv4Address": VPS_IPV4, "ipv6Address": VPS_IPV6}
        elif t == "tailscale:index/tailnetKey:TailnetKey":
            state["key"] = f"tskey-auth-{args.name}-SECRET"
        elif t == "cloudflare:index/apiToken:ApiToken":
            rid = f"token-id-{args.name}"
            state["value"] = f"token-value-{args.name}-SECRET"
        elif t == "cloudflare:index/originCaCertificate:OriginCaCertificate":
            state["certificate"] = "-----BEGIN CERTIFICATE-----\nMOCK\n-----END CERTIFICATE-----\n"
        elif t == "command:remote:Command":
            state["stdout"] = {
                "cloud-init-done": TAILNET_IP + "\n",
                "origin-csr": "-----BEGIN CERTIFICATE REQUEST-----\nMOCK\n",
            }.get(args.name, "")
            if args.name.endswith(("-ready", "-bootstrap")):  # a GPU host's bootstrap
                state["stdout"] = f"== ready: {args.name} {GPU_TAILNET_IP}\n"
        elif t == "random:index/randomPassword:RandomPassword":
            # As long as asked for (the queue checks minimum lengths), and recognisable.
            result = f"pw-{args.name}-SECRET".ljust(int(args.inputs.get("length", 0)), "x")
            state |= {"result": result, "bcryptHash": f"$2a$10$hash{args.name}"}
        elif t == "docker:index/remoteImage:RemoteImage":
            state["imageId"] = "sha256:" + "a" * 64
        elif t == VERDA_INSTANCE:
            rid = f"verda-{args.name}"
            state |= {"instanceId": rid, "ip": "198.51.100.20", "status": "running"}
            state["hourlyEur"] = VERDA_EUR_PER_HOUR
        self.ids[f"{args.typ}::{args.name}"] = rid
        return rid, state

    def call(self, args: MockCallArgs):
        return {}


@dataclass
class Stack:
    """What a build produced: registrations by key, and resolved outputs with secretness."""

    resources: dict[str, Registration]
    outputs: dict[str, Any]
    secret_outputs: set[str]

    def of_type(self, t: str) -> list[Registration]:
        return [r for r in self.resources.values() if r.type == t]

    def one(self, t: str, name: str) -> Registration:
        return self.resources[f"{t}::{name}"]

    def ancestors(self, key: str) -> set[str]:
        """Every resource `key` depends on, explicitly or through its parents' options."""
        seen: set[str] = set()
        todo = [key]
        while todo:
            r = self.resources[todo.pop()]
            for d in r.depends_on:
                if d not in seen:
                    seen.add(d)
                    todo.append(d)
        return seen


def make_config(tmp_path: Path, participants: int = 20, **overrides: Any) -> WorkshopConfig:
    """A complete, valid config like an organizer's stack file."""
    key_file = tmp_path / "id_ed25519"
    key_file.write_text(
        "-----BEGIN OPENSSH PRIVATE KEY-----\nMOCK\n-----END OPENSSH PRIVATE KEY-----\n"
    )
    raw: dict[str, Any] = {
        "domain": "workshop.example.org",
        "cloudflareZoneId": ZONE,
        "cloudflareAccountId": ACCOUNT,
        "participants": str(participants),
        "adminEmails": ["admin@example.org"],
        "sshPublicKeys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMockKeyMaterial admin@laptop"],
        "sshPrivateKeyFile": str(key_file),
        "adminCidrs": ["198.51.100.0/24"],
    }
    raw.update(overrides)
    return load_config(raw.get, lambda k: None, "comfy-workshop", "workshop")


def run_program(config: WorkshopConfig) -> Stack:
    """Build a fresh stack under mocks; returns only after every registration finished."""
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="comfy-workshop", stack="workshop", preview=False)
    recorded: dict[int, Registration] = {}
    objects: dict[int, pulumi.Resource] = {}

    def key_of(res: pulumi.Resource) -> str:
        return recorded[id(res)].key

    pending: list[tuple[Registration, pulumi.ResourceOptions]] = []

    def recorder(args: pulumi.ResourceTransformationArgs):
        o = args.opts
        reg = Registration(
            type=args.type_,
            name=args.name,
            protect=bool(o.protect),
            retain_on_delete=bool(o.retain_on_delete),
            delete_before_replace=bool(o.delete_before_replace),
            replace_on_changes=list(o.replace_on_changes or []),
            additional_secret_outputs=list(o.additional_secret_outputs or []),
        )
        recorded[id(args.resource)] = reg
        objects[id(args.resource)] = args.resource
        pending.append((reg, o))
        return None

    result: dict[str, Any] = {}

    @pulumi.runtime.test
    def _build():
        outputs = build(config, pulumi.ResourceOptions(transformations=[recorder]))

        async def resolve():
            for k, v in outputs.items():
                out = pulumi.Output.from_input(v)
                result[k] = (await out.future(), await out.is_secret())

        return asyncio.ensure_future(resolve())

    _build()
    resources: dict[str, Registration] = {}
    for reg, o in pending:
        deps = (
            o.depends_on
            if isinstance(o.depends_on, list)
            else [o.depends_on]
            if o.depends_on
            else []
        )
        reg.depends_on = [key_of(d) for d in deps if id(d) in recorded]
        if o.parent is not None and id(o.parent) in recorded:
            reg.parent = key_of(o.parent)
        if o.provider is not None and id(o.provider) in recorded:
            reg.provider = key_of(o.provider)
        reg.id = mocks.ids.get(reg.key)
        seen = mocks.inputs.get(reg.key)
        if seen is not None:
            raw = json.loads(json.dumps(seen.inputs, default=str))
            reg.secret_inputs = {k for k, v in raw.items() if _has_secret(v)}
            reg.inputs = _unwrap(raw)
        resources[reg.key] = reg
    return Stack(
        resources=resources,
        outputs={k: v[0] for k, v in result.items()},
        secret_outputs={k for k, v in result.items() if v[1]},
    )
