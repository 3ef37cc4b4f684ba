"""The `workshop:gpu` config section: which GPU hosts the stack declares, validated once.

Kept apart from infra/config.py so the GPU fleet's settings grow without touching the rest of
the stack's configuration; `parse_gpu` raises `GpuConfigError` naming the key and the
`pulumi config set` command that fixes it (infra/config.py re-raises it as its ConfigError).
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any

PROVIDERS = ("verda", "ssh", "none")
#: ComfyUI processes per GPU by workload class, from ../shared/comfyui/GPU.md: four
#: thread-limited pairs saturate an H100 on SD1.5-class jobs, two on SDXL-class ones
#: (Flux- and LTX-class models are at least as heavy as SDXL).
PROCESSES_BY_WORKLOAD = {"sd15": 4, "sdxl": 2}
DIGEST_RE = re.compile(r"^[a-z0-9][a-z0-9._/:-]*@sha256:[0-9a-f]{64}$")
HOSTNAME_RE = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
VERDA_TYPE_RE = re.compile(r"^\d+[A-Z0-9]+(\.[A-Za-z0-9]+)+$")  # 1H100.80S.30V, 8A100.176V
NFS_RE = re.compile(r"^[A-Za-z0-9.-]+:/[A-Za-z0-9._/-]*$")  # server:/export
MAX_HOSTS = 64


class GpuConfigError(ValueError):
    """A key of `workshop:gpu` is invalid; the message says how to fix it."""


def _fix(key: str, example: str) -> str:
    return f"run: pulumi config set --path 'workshop:gpu.{key}' {example}"


@dataclass(frozen=True)
class SshHost:
    """An existing GPU machine the stack bootstraps over SSH (a venue workstation, a pod)."""

    address: str
    user: str = "root"
    port: int = 22
    hourly_eur: float | None = None  # None: the section's hourlyEur
    shared_models_dir: str = ""  # a directory on that host already holding the models


@dataclass(frozen=True)
class GpuSettings:
    """What GPU hosts to run and how; `active` is False for `none` or a count of 0."""

    provider: str = "verda"
    count: int = 0
    # Worker tokens are minted for this many hosts, so changing `count` below it never
    # changes the queue's environment (which would restart the queue container).
    token_pool: int = 8
    instance_type: str = "1H100.80S.30V"
    spot: bool = False
    location: str = "FIN-01"
    image: str = "ubuntu-24.04-cuda-12.8-open-docker"
    os_volume_gb: int = 200
    workload: str = "sdxl"
    processes_per_gpu: int = PROCESSES_BY_WORKLOAD["sdxl"]
    idle_minutes: int = 20
    hourly_eur: float = 0.0
    worker_image: str = ""
    ssh_user: str = "root"  # how Pulumi logs into a Verda instance to wait for its bootstrap
    shared_models_nfs: str = ""  # Verda: an NFS export (shared filesystem) holding the models
    ssh_hosts: tuple[SshHost, ...] = field(default_factory=tuple)

    @property
    def active(self) -> bool:
        return self.provider != "none" and self.count > 0

    @property
    def host_names(self) -> tuple[str, ...]:
        """The hosts declared now: gpu-01 .. gpu-NN (a count change adds or drops the tail)."""
        return tuple(host_name(i) for i in range(1, self.count + 1)) if self.active else ()

    @property
    def token_names(self) -> tuple[str, ...]:
        """Names of the worker tokens the queue knows: the pool, whenever any host runs."""
        return tuple(host_name(i) for i in range(1, self.token_pool + 1)) if self.active else ()


def host_name(index: int) -> str:
    """The stack's name of GPU host `index` (1-based); also its worker token's name."""
    return f"gpu-{index:02d}"


def _int(raw: dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    value = raw.get(key)
    if value is None or value == "":
        return default
    try:
        number = int(str(value))
    except ValueError:
        number = lo - 1
    if not lo <= number <= hi:
        raise GpuConfigError(
            f"config key 'workshop:gpu.{key}' must be an integer in [{lo}, {hi}], got {value!r}; "
            + _fix(key, str(default))
        )
    return number


def _float(raw: dict[str, Any], key: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if number < 0:
        raise GpuConfigError(
            f"config key 'workshop:gpu.{key}' must be a number >= 0 (EUR per hour), "
            f"got {value!r}; " + _fix(key, "1.50")
        )
    return number


def _bool(raw: dict[str, Any], key: str) -> bool:
    value = raw.get(key, False)
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "false"):
        return str(value).lower() == "true"
    raise GpuConfigError(
        f"config key 'workshop:gpu.{key}' must be true or false; " + _fix(key, "true")
    )


def _str(raw: dict[str, Any], key: str, default: str) -> str:
    value = raw.get(key)
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        raise GpuConfigError(
            f"config key 'workshop:gpu.{key}' must be a string; " + _fix(key, "<value>")
        )
    return value.strip()


def _ssh_hosts(raw: dict[str, Any]) -> tuple[SshHost, ...]:
    entries = raw.get("hosts") or []
    if not isinstance(entries, list):
        raise GpuConfigError(
            "config key 'workshop:gpu.hosts' must be a list of {address, user, port}; "
            + _fix("hosts[0].address", "192.0.2.10")
        )
    hosts = []
    for i, entry in enumerate(entries):
        where = f"hosts[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("address"), str):
            raise GpuConfigError(
                f"config key 'workshop:gpu.{where}' needs an address; "
                + _fix(f"{where}.address", "192.0.2.10")
            )
        address = entry["address"].strip()
        try:
            ipaddress.ip_address(address)
        except ValueError:
            if not HOSTNAME_RE.match(address):
                raise GpuConfigError(
                    f"config key 'workshop:gpu.{where}.address' is neither an IP address nor a "
                    f"host name: {address!r}; " + _fix(f"{where}.address", "192.0.2.10")
                ) from None
        hourly = entry.get("hourlyEur")
        hosts.append(
            SshHost(
                address=address,
                user=_str(entry, "user", "root"),
                port=_int(entry, "port", 22, 1, 65535),
                hourly_eur=None if hourly is None else _float(entry, f"{where}.hourlyEur", hourly),
                shared_models_dir=_str(entry, "sharedModelsDir", ""),
            )
        )
    return tuple(hosts)


def parse_gpu(raw: Any) -> GpuSettings:
    """Validate the `workshop:gpu` object (a dict, its JSON text, or None for the defaults)."""
    if raw is None or raw == "":
        raw = {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raw = None
    if not isinstance(raw, dict):
        raise GpuConfigError(
            "config key 'workshop:gpu' must be an object; " + _fix("provider", "verda")
        )
    provider = _str(raw, "provider", "verda")
    if provider not in PROVIDERS:
        raise GpuConfigError(
            f"config key 'workshop:gpu.provider' must be one of {', '.join(PROVIDERS)}, "
            f"got {provider!r}; " + _fix("provider", "verda")
        )
    count = _int(raw, "count", 0, 0, MAX_HOSTS)
    pool = _int(raw, "tokenPool", max(8, count), 1, MAX_HOSTS)
    if pool < count:
        raise GpuConfigError(
            f"config key 'workshop:gpu.tokenPool' ({pool}) must be at least count ({count}); "
            + _fix("tokenPool", str(count))
        )
    workload = _str(raw, "workload", "sdxl")
    if workload not in PROCESSES_BY_WORKLOAD:
        raise GpuConfigError(
            f"config key 'workshop:gpu.workload' must be one of "
            f"{', '.join(PROCESSES_BY_WORKLOAD)}, got {workload!r}; " + _fix("workload", "sdxl")
        )
    instance_type = _str(raw, "instanceType", GpuSettings.instance_type)
    if not VERDA_TYPE_RE.match(instance_type):
        raise GpuConfigError(
            f"config key 'workshop:gpu.instanceType' is not a Verda instance type "
            f"(e.g. 1H100.80S.30V), got {instance_type!r}; " + _fix("instanceType", "1H100.80S.30V")
        )
    worker_image = _str(raw, "workerImage", "")
    if worker_image and not DIGEST_RE.match(worker_image):
        raise GpuConfigError(
            "config key 'workshop:gpu.workerImage' must be pinned by digest "
            f"(name@sha256:<64 hex>), got {worker_image!r}; "
            + _fix("workerImage", "ghcr.io/<owner>/<repo>/worker@sha256:<digest>")
        )
    nfs = _str(raw, "sharedModelsNfs", "")
    if nfs and not NFS_RE.match(nfs):
        raise GpuConfigError(
            f"config key 'workshop:gpu.sharedModelsNfs' must be server:/export, got {nfs!r}; "
            + _fix("sharedModelsNfs", "nfs.example:/models")
        )
    settings = GpuSettings(
        provider=provider,
        count=count,
        token_pool=pool,
        instance_type=instance_type,
        spot=_bool(raw, "spot"),
        location=_str(raw, "location", GpuSettings.location),
        image=_str(raw, "image", GpuSettings.image),
        os_volume_gb=_int(raw, "osVolumeGb", GpuSettings.os_volume_gb, 50, 10240),
        workload=workload,
        processes_per_gpu=_int(raw, "processesPerGpu", PROCESSES_BY_WORKLOAD[workload], 1, 16),
        idle_minutes=_int(raw, "idleMinutes", GpuSettings.idle_minutes, 1, 24 * 60),
        hourly_eur=_float(raw, "hourlyEur", raw.get("hourlyEur", 0.0)),
        worker_image=worker_image,
        ssh_user=_str(raw, "sshUser", "root"),
        shared_models_nfs=nfs,
        ssh_hosts=_ssh_hosts(raw),
    )
    if settings.active and not settings.worker_image:
        raise GpuConfigError(
            "config key 'workshop:gpu.workerImage' is required when GPU hosts run (count > 0): "
            "the digest the worker-image workflow published for a release tag; "
            + _fix("workerImage", "ghcr.io/<owner>/<repo>/worker@sha256:<digest>")
        )
    if settings.active and provider == "ssh" and len(settings.ssh_hosts) < count:
        raise GpuConfigError(
            f"config key 'workshop:gpu.hosts' lists {len(settings.ssh_hosts)} host(s) but count "
            f"is {count}: the ssh provider bootstraps the first `count` of them; "
            + _fix(f"hosts[{len(settings.ssh_hosts)}].address", "192.0.2.10")
        )
    return settings
