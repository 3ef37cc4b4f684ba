"""Run the Pulumi program under mocks that behave like the real providers, across deployments.

A plain `set_mocks` run creates everything and checks nothing. These mocks add what a first
real `pulumi up` (and the second, and a destroy in between) would meet:

- a `World`: what exists at the providers, outliving Pulumi's state (buckets, zone settings,
  tailnet keys and devices, servers and the Docker objects on each), with the providers'
  rules: Hetzner refuses server types it no longer sells, images it does not have (per
  architecture) and names already in use, R2 refuses a bucket that exists, a single-use
  tailnet key works once, Tailscale rejects ACL `tests` for a user without a device,
  deleting a zone setting resets it;
- a prior `State`, so a run is an update: each resource is created, kept, updated in place
  or replaced by the provider's own rule for which arguments force a new resource
  (`REPLACED_BY`), as the engine decides from the provider's diff;
- `destroy`: `pulumi destroy --exclude-protected` (protected resources and everything they
  depend on stay; `retain_on_delete` ones leave the state but not the provider).

What is modelled is named after the provider rule it stands for; the docs
(docs/infrastructure.md, "Provider rules") list the same rules with the versions checked.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import MockCallArgs, MockResourceArgs, Mocks

from infra.config import WorkshopConfig, load_config
from infra.program import build

ZONE = "0123456789abcdef0123456789abcdef"
ACCOUNT = "fedcba9876543210fedcba9876543210"
TODAY = "2026-12-01"
#: The tailnet address the first node to join a fresh tailnet gets (the VPS, on day one).
TAILNET_IP = "100.64.0.7"
GPU_TAILNET_IP = "100.64.1.1"
WORKER_IMAGE = "ghcr.io/example/comfy-workshop/worker@sha256:" + "d" * 64
VERDA_INSTANCE = "pulumi-python:dynamic/verda:Instance"
VERDA_EUR_PER_HOUR = 2.38

# Cloudflare's published ranges (https://www.cloudflare.com/ips/), what getIpRanges answers.
CLOUDFLARE_IPV4 = (
    "173.245.48.0/20", "103.21.244.0/22", "103.22.200.0/22", "103.31.4.0/22",
    "141.101.64.0/18", "108.162.192.0/18", "190.93.240.0/20", "188.114.96.0/20",
    "197.234.240.0/22", "198.41.128.0/17", "162.158.0.0/15", "104.16.0.0/13",
    "104.24.0.0/14", "172.64.0.0/13", "131.0.72.0/22",
)  # fmt: skip
CLOUDFLARE_IPV6 = (
    "2400:cb00::/32", "2606:4700::/32", "2803:f800::/32", "2405:b500::/32",
    "2405:8100::/32", "2a06:98c0::/29", "2c0f:f248::/32",
)  # fmt: skip

# -- Hetzner's catalogue, as its API answers it (GET /server_types, /images, /locations) ----
EU = ("fsn1", "nbg1", "hel1")
ALL_LOCATIONS = (*EU, "ash", "hil", "sin")
#: Withdrawn: deprecated 2025-10, not orderable after the date (Hetzner's announcement).
WITHDRAWN = {"cx22", "cx32", "cx42", "cx52", "cpx11", "cpx21", "cpx31", "cpx41", "cpx51"}
SERVER_TYPES: dict[str, tuple[str, tuple[str, ...]]] = {
    **{t: ("x86", EU) for t in ("cx23", "cx33", "cx43", "cx53")},
    **{t: ("arm", EU) for t in ("cax11", "cax21", "cax31", "cax41")},
    **{t: ("x86", ALL_LOCATIONS) for t in ("cpx22", "cpx32", "cpx42", "cpx52", "cpx62")},
    **{t: ("x86", ALL_LOCATIONS) for t in ("ccx13", "ccx23", "ccx33")},
    **{t: ("x86", EU) for t in ("cx22", "cx32", "cx42", "cx52")},
    **{t: ("x86", ALL_LOCATIONS) for t in ("cpx11", "cpx21", "cpx31", "cpx41", "cpx51")},
}
#: Images Hetzner offers, for both architectures.
IMAGES = {"ubuntu-24.04", "ubuntu-22.04", "debian-12", "debian-13"}
#: Offered but deprecated (Hetzner sets `deprecated`; the image is removed later).
DEPRECATED_IMAGES = {"ubuntu-20.04"}


def image_info(name: str, architecture: str | None) -> dict[str, Any]:
    """What hcloud's getImage returns for a name (GET /images?name=&architecture=, the
    architecture defaulting to x86), raising as the data source does for no match."""
    arch = architecture or "x86"
    if name not in IMAGES | DEPRECATED_IMAGES or arch not in ("x86", "arm"):
        raise LookupError(f"no image found with name {name}")
    deprecated = "2025-06-01T00:00:00Z" if name in DEPRECATED_IMAGES else ""
    return {
        "id": 100 + sorted(IMAGES | DEPRECATED_IMAGES).index(name) * 2 + (arch == "arm"),
        "name": name,
        "architecture": arch,
        "type": "system",
        "osFlavor": name.split("-")[0],
        "osVersion": name.split("-")[1],
        "isDeprecated": bool(deprecated),
        "deprecated": deprecated,
        "deprecationAnnounced": deprecated,
    }


def server_type_info(name: str) -> dict[str, Any]:
    """What hcloud's getServerType returns for `name` (raises as the data source does)."""
    if name not in SERVER_TYPES:
        raise Exception(f"no server type found with name {name!r}")
    arch, locations = SERVER_TYPES[name]
    withdrawn = name in WITHDRAWN
    return {
        "name": name,
        "architecture": arch,
        "locations": [
            {
                "id": i,
                "name": loc,
                "available": True,
                "recommended": not withdrawn,
                "isDeprecated": withdrawn,
                "deprecationAnnounced": "2025-10-16T00:00:00Z" if withdrawn else "",
                "unavailableAfter": "2026-01-01T00:00:00Z" if withdrawn else "",
            }
            for i, loc in enumerate(locations, 1)
        ],
    }


# -- which arguments force a new resource (the providers' schemas) --------------------------
ALL = "*"
#: type -> the (wire-name) arguments whose change replaces the resource; the others are
#: updated in place. Sources: docs/infrastructure.md, "Provider rules".
REPLACED_BY: dict[str, set[str] | str] = {
    "hcloud:index/server:Server": {"userData", "sshKeys", "image", "location", "datacenter"},
    "hcloud:index/sshKey:SshKey": {"publicKey"},
    "hcloud:index/volume:Volume": {"location", "format"},
    "hcloud:index/volumeAttachment:VolumeAttachment": {"serverId", "volumeId"},
    "hcloud:index/firewall:Firewall": set(),
    # terraform-provider-docker: a container is immutable but for a few limits and the
    # restart policy; networks have no update at all; a pulled image is replaced on `name`,
    # `triggers` and `pullTriggers`.
    "docker:index/container:Container": ALL,
    "docker:index/network:Network": ALL,
    "docker:index/remoteImage:RemoteImage": {"name", "triggers", "pullTriggers", "platform"},
    # pulumi-docker's own Image: any change is an update, which rebuilds.
    "docker:index/image:Image": set(),
    # The provider's `host` is updated in place (DiffConfig reports no replacement).
    "pulumi:providers:docker": set(),
    # pulumi-command: `triggers` replaces; a script or stdin change runs `update` (or
    # `create` when there is no update script).
    "command:remote:Command": {"triggers"},
    "tailscale:index/tailnetKey:TailnetKey": ALL,
    "tailscale:index/acl:Acl": set(),
    "cloudflare:index/r2Bucket:R2Bucket": {"name", "accountId", "location"},
    "cloudflare:index/apiToken:ApiToken": set(),
    "cloudflare:index/originCaCertificate:OriginCaCertificate": ALL,
    "cloudflare:index/dnsRecord:DnsRecord": {"zoneId"},
    "cloudflare:index/zoneSetting:ZoneSetting": {"zoneId", "settingId"},
    "random:index/randomPassword:RandomPassword": ALL,
}
#: A container's arguments that `docker update` changes in place.
CONTAINER_UPDATABLE = {"restart", "memory", "memorySwap", "cpuShares", "cpuSet"}
ZONE_DEFAULTS = {"ssl": "flexible", "always_use_https": "off"}


class ProviderError(Exception):
    """What the provider's API answered instead of doing the operation."""


class UpFailed(Exception):
    """A `pulumi up` that stopped part-way: `state` is what the engine checkpointed."""

    def __init__(self, message: str, state: State, world: World) -> None:
        super().__init__(message)
        self.state = state
        self.world = world


@dataclass
class Server:
    """One Hetzner server as the world knows it."""

    id: str
    name: str
    ipv4: str
    user_data: str
    docker: dict[str, str] = field(default_factory=dict)  # Docker objects: "type::name" -> id
    tailnet_ip: str | None = None


@dataclass
class World:
    """What exists at the providers; it outlives the Pulumi state (and `destroy`)."""

    buckets: set[str] = field(default_factory=set)
    zone: dict[str, str] = field(default_factory=lambda: dict(ZONE_DEFAULTS))
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)  # tailnet auth keys
    devices: list[dict[str, Any]] = field(default_factory=list)  # tailnet nodes
    users_with_devices: set[str] = field(default_factory=set)
    servers: dict[str, Server] = field(default_factory=dict)
    backups: int = 0  # backups the nightly delete step wrote
    #: How often each resource ("type::name") was created: its generation. Ids and generated
    #: values derive from the name and the generation, so two fresh builds of different
    #: configs give a resource the same id and value (their registrations can be compared),
    #: and a re-created one gets new ones.
    created: collections.Counter = field(default_factory=collections.Counter)

    def new_id(self, key: str) -> tuple[str, int]:
        """A numeric id (hcloud's are ints) for a new instance of `key`, and its generation."""
        generation = self.created[key]
        self.created[key] += 1
        return str(int(hashlib.sha256(key.encode()).hexdigest()[:12], 16) + generation), generation

    def server_at(self, ipv4: str) -> Server:
        for s in self.servers.values():
            if s.ipv4 == ipv4:
                return s
        raise ProviderError(f"ssh: connect to host {ipv4} port 22: No route to host")

    def join_tailnet(self, key: str, server: Server) -> str:
        """`tailscale up --auth-key`: a single-use key works once, a revoked one never."""
        k = self.keys.get(key)
        if k is None or k["revoked"] or (k["used"] and not k["reusable"]):
            raise ProviderError("tailscale up: invalid key: unable to validate API key")
        if server.tailnet_ip is None:  # an already joined node ignores the key
            k["used"] = True
            server.tailnet_ip = f"100.64.0.{7 + len(self.devices)}"
            self.devices.append({"hostname": server.name, "ip": server.tailnet_ip})
        return server.tailnet_ip


@dataclass
class Stored:
    """One resource in the Pulumi state."""

    type: str
    name: str
    id: str
    inputs: dict[str, Any]  # plain values
    outputs: dict[str, Any]  # as returned to the program (secrets still wrapped)
    protect: bool
    retain_on_delete: bool
    depends_on: list[str]
    parent: str | None
    provider: str | None

    @property
    def key(self) -> str:
        return f"{self.type}::{self.name}"


State = dict[str, Stored]


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
    op: str = "create"  # what this deployment did: create, same, update, replace

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


def _plain(inputs: dict[str, Any]) -> dict[str, Any]:
    return _unwrap(json.loads(json.dumps(inputs, default=str)))


def diff(typ: str, old: dict[str, Any], new: dict[str, Any], replace_on_changes: list[str]):
    """What the provider (and the engine's replaceOnChanges) make of an input change."""
    changed = {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)}
    if not changed:
        return "same"
    rule = REPLACED_BY.get(typ, set())
    forcing = (
        changed - CONTAINER_UPDATABLE
        if rule == ALL and typ == "docker:index/container:Container"
        else changed
        if rule == ALL
        else changed & set(rule)
    )
    if forcing or "*" in replace_on_changes or changed & set(replace_on_changes):
        return "replace"
    return "update"


class ProviderMocks(Mocks):
    """The providers: outputs for the program, effects on the World, errors where they'd err."""

    def __init__(self, world: World, prior: State, options: dict[str, Registration]) -> None:
        self.world = world
        self.prior = prior
        self.options = options  # filled by the recording transformation, before registering
        self.inputs: dict[str, dict[str, Any]] = {}
        self.ids: dict[str, str] = {}
        self.outputs: dict[str, dict[str, Any]] = {}
        self.ops: dict[str, str] = {}
        self.providers_by_id: dict[str, str] = {}  # provider id -> "type::name"
        self.replaced_later: list[Stored] = []  # create-before-delete: old ones go at the end

    # -- engine -------------------------------------------------------------------------
    def new_resource(self, args: MockResourceArgs):
        key = f"{args.typ}::{args.name}"
        plain = _plain(args.inputs)
        self.inputs[key] = args.inputs
        prior = self.prior.get(key)
        reg = self.options.get(key)
        if prior is None:
            op = "create"
        elif not args.custom:
            op = "same"
        else:
            op = diff(args.typ, prior.inputs, plain, reg.replace_on_changes if reg else [])
        if op == "replace" and prior is not None and prior.protect:
            raise ProviderError(f"unable to replace resource {key!r}: it is protected")
        self.ops[key] = op
        if op == "same":
            rid, state = prior.id, prior.outputs
        elif op == "update":
            rid, state = prior.id, self.update(args, plain, prior)
        else:
            if op == "replace":
                if reg is not None and reg.delete_before_replace:
                    delete_at_provider(self.world, prior)
                else:
                    self.replaced_later.append(prior)
            rid, state = self.create(args, plain)
        self.ids[key] = rid
        self.outputs[key] = state
        if args.typ.startswith("pulumi:providers:"):
            self.providers_by_id[rid] = key
        return rid, state

    def host_of(self, args: MockResourceArgs) -> Server:
        """The server a Docker resource lands on: the one its provider's `host` names now."""
        provider_key = self.providers_by_id[args.provider.rsplit("::", 1)[1]]
        host = _unwrap(self.outputs[provider_key]["host"])
        return self.world.server_at(re.fullmatch(r"ssh://deploy@(.+):22", host).group(1))

    # -- create / update, per provider ----------------------------------------------------
    def create(self, args: MockResourceArgs, plain: dict[str, Any]) -> tuple[str, dict]:
        t, w = args.typ, self.world
        rid, gen = w.new_id(f"{t}::{args.name}")
        again = f"-g{gen}" if gen else ""  # a re-created resource's values are new
        state = dict(args.inputs)
        if t == "hcloud:index/server:Server":
            self.check_orderable(plain)
            if any(s.name == plain["name"] for s in w.servers.values()):
                raise ProviderError(f"server name {plain['name']!r} is already used")
            ipv4 = f"203.0.113.{10 + gen}"
            w.servers[rid] = Server(rid, plain["name"], ipv4, plain["userData"])
            state |= {"ipv4Address": ipv4, "ipv6Address": f"2001:db8::{gen + 1:x}"}
        elif t == "cloudflare:index/r2Bucket:R2Bucket":
            if plain["name"] in w.buckets:
                raise ProviderError(f"bucket {plain['name']!r} already exists (409)")
            w.buckets.add(plain["name"])
        elif t == "cloudflare:index/zoneSetting:ZoneSetting":
            w.zone[plain["settingId"]] = plain["value"]
        elif t == "tailscale:index/tailnetKey:TailnetKey":
            state["key"] = f"tskey-auth-{args.name}{again}-SECRET"
            w.keys[state["key"]] = {"reusable": bool(plain.get("reusable")), "used": False,
                                    "revoked": False}  # fmt: skip
        elif t == "tailscale:index/acl:Acl":
            self.check_acl(plain)
        elif t == "cloudflare:index/apiToken:ApiToken":
            rid = f"token-id-{args.name}"
            state["value"] = f"token-value-{args.name}-SECRET"
        elif t == "cloudflare:index/originCaCertificate:OriginCaCertificate":
            state["certificate"] = "-----BEGIN CERTIFICATE-----\nMOCK\n-----END CERTIFICATE-----\n"
        elif t == "command:remote:Command":
            state["stdout"] = self.run_command(args.name, plain)
        elif t == "random:index/randomPassword:RandomPassword":
            # As long as asked for (the queue checks minimum lengths), recognisable, and new
            # each time one is created (as pulumi-random's are).
            result = f"pw-{args.name}{again}-SECRET".ljust(int(plain.get("length", 0)), "x")
            state |= {"result": result, "bcryptHash": f"$2a$10$hash{args.name}{again}"}
        elif t == VERDA_INSTANCE:
            rid = f"verda-{args.name}{again}"
            state |= {"instanceId": rid, "ip": "198.51.100.20", "status": "running"}
            state["hourlyEur"] = VERDA_EUR_PER_HOUR
        elif t.startswith("docker:index/"):
            if t == "docker:index/remoteImage:RemoteImage":
                state["imageId"] = "sha256:" + "a" * 64
            self.host_of(args).docker[f"{t}::{args.name}"] = rid
        return rid, state

    def update(self, args: MockResourceArgs, plain: dict[str, Any], prior: Stored) -> dict:
        t, w = args.typ, self.world
        state = {**prior.outputs, **args.inputs}
        if t == "cloudflare:index/zoneSetting:ZoneSetting":
            w.zone[plain["settingId"]] = plain["value"]
        elif t == "tailscale:index/acl:Acl":
            self.check_acl(plain)
        elif t == "command:remote:Command":
            if not plain.get("update"):  # pulumi-command runs `create` again
                state["stdout"] = self.run_command(args.name, plain)
        elif t.startswith("docker:index/"):
            server = self.host_of(args)
            key = f"{t}::{args.name}"
            if t == "docker:index/image:Image":
                server.docker[key] = prior.id  # an update is a rebuild, on the provider's host
            elif key not in server.docker:
                raise ProviderError(f"Error: No such object: {args.name} (on {server.name})")
        return state

    # -- the providers' rules -------------------------------------------------------------
    def check_orderable(self, server: dict[str, Any]) -> None:
        """Hetzner's create: type, location and image must be on sale."""
        info = server_type_info(server["serverType"])
        where = {loc["name"]: loc for loc in info["locations"]}
        loc = where.get(server["location"])
        if loc is None:
            raise ProviderError(f"unsupported location for server type {server['serverType']}")
        if loc["unavailableAfter"] and loc["unavailableAfter"][:10] <= TODAY:
            raise ProviderError(f"server type {server['serverType']} is deprecated (unsupported)")
        if server["image"] not in IMAGES | DEPRECATED_IMAGES:
            raise ProviderError(f"image {server['image']!r} not found")

    def check_acl(self, acl: dict[str, Any]) -> None:
        """Tailscale runs the policy's `tests`; a user source needs an approved device."""
        doc = json.loads(acl["acl"])
        for test in doc.get("tests", []):
            src = test["src"]
            if "@" in src and src not in self.world.users_with_devices:
                raise ProviderError(
                    f"test(s) failed for user: {src}: no associated IPs for user "
                    "(check spelling, or they may not have an approved machine)"
                )

    def run_command(self, name: str, cmd: dict[str, Any]) -> str:
        """What the remote commands print, and what running them does on the server."""
        if name.endswith(("-ready", "-bootstrap")):  # a GPU host's bootstrap (not a Hetzner VPS)
            return f"== ready: {name} {GPU_TAILNET_IP}\n"
        if name not in ("cloud-init-done", "tailnet-join", "origin-csr"):
            return ""
        server = self.world.server_at(cmd["connection"]["host"])
        if name == "cloud-init-done":
            # cloud-init ran at boot: a tailnet key in the user data is used then.
            doc = yaml.safe_load(server.user_data)
            for f in doc.get("write_files", []):
                if "tailscale-authkey" in f["path"]:
                    try:
                        return self.world.join_tailnet(f["content"].strip(), server) + "\n"
                    except ProviderError as e:
                        raise ProviderError(f"cloud-init status: error ({e})") from None
            return ""
        if name == "tailnet-join":
            return self.world.join_tailnet(cmd["stdin"], server) + "\n"
        return "-----BEGIN CERTIFICATE REQUEST-----\nMOCK\n"  # origin-csr

    def call(self, args: MockCallArgs):
        if args.token == "hcloud:index/getServerType:getServerType":
            return server_type_info(args.args["name"])
        if args.token == "hcloud:index/getImage:getImage":
            # The data source's error reaches the program as a failed invoke (the engine
            # answers the SDK with the provider's error), as the failures of the response.
            try:
                return image_info(args.args["name"], args.args.get("withArchitecture"))
            except LookupError as e:
                return {}, [("name", str(e))]
        if args.token == "cloudflare:index/getIpRanges:getIpRanges":
            return {"ipv4Cidrs": list(CLOUDFLARE_IPV4), "ipv6Cidrs": list(CLOUDFLARE_IPV6),
                    "etag": "mock"}  # fmt: skip
        return {}


def delete_at_provider(world: World, res: Stored) -> None:
    """The provider's delete (not called for `retain_on_delete`)."""
    if res.retain_on_delete:
        return
    t = res.type
    if t == "hcloud:index/server:Server":
        world.servers.pop(res.id, None)
    elif t == "cloudflare:index/r2Bucket:R2Bucket":
        world.buckets.discard(res.inputs["name"])
    elif t == "cloudflare:index/zoneSetting:ZoneSetting":
        world.zone[res.inputs["settingId"]] = ZONE_DEFAULTS[res.inputs["settingId"]]
    elif t == "tailscale:index/tailnetKey:TailnetKey":
        world.keys[_unwrap(res.outputs["key"])]["revoked"] = True
    elif t == "command:remote:Command" and "services.backup backup" in str(
        res.inputs.get("delete")
    ):
        world.backups += 1
    elif t.startswith("docker:index/"):
        for server in world.servers.values():
            if server.docker.get(res.key) == res.id:
                del server.docker[res.key]


@dataclass
class Stack:
    """What a deployment produced: registrations, resolved outputs, the state it leaves."""

    resources: dict[str, Registration]
    outputs: dict[str, Any]
    secret_outputs: set[str]
    state: State
    world: World

    def of_type(self, t: str) -> list[Registration]:
        return [r for r in self.resources.values() if r.type == t]

    def one(self, t: str, name: str) -> Registration:
        return self.resources[f"{t}::{name}"]

    def ops(self, op: str) -> set[str]:
        return {k for k, r in self.resources.items() if r.op == op}

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
    # Secrets arrive through get_secret (a plain value stands in for pulumi's secret Output).
    return load_config(raw.get, lambda k: raw.get(k), "comfy-workshop", "workshop")


#: Every configuration docs/infrastructure.md describes ("Configurations"), as overrides of
#: the organizer's stack file. The policy pack must pass all of them.
DOCUMENTED_CONFIGS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "ci-built-images": {
        "queueImage": "ghcr.io/example/comfy-queue@sha256:" + "c" * 64,
        "gatewayImage": "ghcr.io/example/comfy-gateway@sha256:" + "b" * 64,
    },
    "gateway-image": {"gatewayImage": "ghcr.io/example/comfy-gateway@sha256:" + "b" * 64},
    "arm-vps": {"vpsType": "cax11"},
    "200-participants": {"participants": "200", "vpsType": "cx33", "dataVolumeGb": "20"},
    "gpu-hosts": {"gpu": {"count": 2, "hourlyEur": 1.0, "workerImage": WORKER_IMAGE}},
    "gpu-ssh-hosts": {
        "gpu": {
            "provider": "ssh",
            "count": 1,
            "workerImage": WORKER_IMAGE,
            "hosts": [{"address": "192.0.2.10", "user": "ubuntu", "hourlyEur": 0.5}],
        }
    },
    "chosen-passwords": {
        "adminPassword": "correct horse battery",
        "participantPasswords": {"user001": "first participant", "user002": "second one!"},
    },
    "zone-ssl-managed-elsewhere": {"manageZoneSsl": "false"},
    "no-swap": {"swapGb": "0"},
}


def run_program(
    config: WorkshopConfig, world: World | None = None, prior: State | None = None
) -> Stack:
    """One `pulumi up` of a fresh program against `world`, starting from `prior` state.

    Returns only after every registration finished; a provider error fails the run, as it
    fails `pulumi up`.
    """
    world = world if world is not None else World()
    prior = prior or {}
    options: dict[str, Registration] = {}
    mocks = ProviderMocks(world, prior, options)
    pulumi.runtime.set_mocks(mocks, project="comfy-workshop", stack="workshop", preview=False)
    recorded: dict[int, Registration] = {}

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
        options[reg.key] = reg
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

    try:
        _build()
        failure = None
    except Exception as e:  # the provider (or the program) stopped the deployment
        failure = e
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
        reg.op = mocks.ops.get(reg.key, "create")
        seen = mocks.inputs.get(reg.key)
        if seen is not None:
            raw = json.loads(json.dumps(seen, default=str))
            reg.secret_inputs = {k for k, v in raw.items() if _has_secret(v)}
            reg.inputs = _unwrap(raw)
        resources[reg.key] = reg
    if failure is None:
        # The end of the deployment: old halves of create-before-delete replacements, and
        # resources the program no longer declares, are deleted.
        for old in mocks.replaced_later:
            delete_at_provider(world, old)
        for key, old in prior.items():
            if key not in resources:
                delete_at_provider(world, old)
    else:
        # What the engine checkpoints: the prior state plus whatever completed.
        resources = {k: r for k, r in resources.items() if k in mocks.outputs}
    state = {
        k: Stored(
            type=r.type,
            name=r.name,
            id=r.id or "",
            inputs=r.inputs,
            outputs=mocks.outputs.get(k, {}),
            protect=r.protect,
            retain_on_delete=r.retain_on_delete,
            depends_on=list(r.depends_on),
            parent=r.parent,
            provider=r.provider,
        )
        for k, r in resources.items()
    }
    if failure is not None:
        raise UpFailed(str(failure), {**prior, **state}, world) from failure
    return Stack(
        resources=resources,
        outputs={k: v[0] for k, v in result.items()},
        secret_outputs={k for k, v in result.items() if v[1]},
        state=state,
        world=world,
    )


def kept_by_exclude_protected(state: State) -> set[str]:
    """`pulumi destroy --exclude-protected` keeps each protected resource and everything it
    transitively depends on (dependencies, parents, provider): pulumi's separateProtected."""
    kept: set[str] = set()
    todo = [k for k, r in state.items() if r.protect]
    while todo:
        key = todo.pop()
        if key in kept or key not in state:
            continue
        kept.add(key)
        r = state[key]
        todo += [*r.depends_on, *(x for x in (r.parent, r.provider) if x)]
    return kept


def destroy(stack: Stack, order: Iterable[str] | None = None) -> State:
    """The evening's `pulumi destroy --exclude-protected`; returns the state that remains.

    Dependents go first (reverse registration order); `retain_on_delete` resources leave
    the state without the provider's delete.
    """
    state = copy.copy(stack.state)
    kept = kept_by_exclude_protected(state)
    for key in reversed(list(order or state)):
        if key not in kept:
            delete_at_provider(stack.world, state.pop(key))
    return state
