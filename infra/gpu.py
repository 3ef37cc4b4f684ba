"""GPU hosts: one `GpuHost` per configured host, booted into ready ComfyUI workers.

`workshop:gpu` (infra/gpu_config.py) says which provider and how many. Each host is its own
component named gpu-01, gpu-02, ... so changing `count` adds or removes exactly the hosts at the
end and touches nothing else: the worker tokens the queue knows are minted for a pool of hosts
(`tokenPool`), not for `count`, so the queue's environment does not change with it.

- `verda`: a Verda instance (infra/verda_provider.py) whose startup script is the bootstrap,
  then a wait over SSH until the bootstrap reports ready (or its failure, shown by Pulumi).
- `ssh`: an existing machine; the bootstrap is piped to it over SSH (pulumi-command), and
  `destroy` tears the workers down and logs it out of the tailnet.
- `none`, or count 0: nothing at all.

The bootstrap (infra/gpu_bootstrap.py, cloud-init/gpu*) is the same for both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_command as command
import pulumi_random as random

from infra.gpu_bootstrap import AS_ROOT, TEARDOWN, WAIT_FOR_BOOTSTRAP, HostBootstrap, render_script
from infra.gpu_config import GpuSettings, SshHost
from infra.policy.rules import GPU_SSH_AUTH, GPU_SSH_PORT
from infra.storage import S3Credentials
from infra.verda_provider import VerdaInstance, VerdaSshKey
from services.contracts import WORKER_TOKEN_PREFIX
from services.fleet.manifest import DEFAULT_MANIFEST

#: ComfyUI and the workers listen on loopback only; the workers call out to the queue.
COMFYUI_LISTEN = "127.0.0.1"
#: A Verda instance has a public address with sshd on it: Pulumi waits for the bootstrap over
#: it (`gpu-NN-ready`), and the bootstrap makes sshd key-only (the host's sshd drop-in,
#: infra/gpu_bootstrap.py). It is the one public port a GPU host has, and is declared as such.
VERDA_SSH_PORT = GPU_SSH_PORT


def public_ports(provider: str) -> list[int]:
    """The ports the stack's host answers on from the internet. An `ssh` host is the
    organizer's machine: the stack opens nothing on it (its sshd is theirs)."""
    return [VERDA_SSH_PORT] if provider == "verda" else []


@dataclass(frozen=True)
class GpuHostsArgs:
    """What the hosts need from the rest of the stack."""

    settings: GpuSettings
    prefix: str
    tailscale_auth_key: pulumi.Output[str]
    r2: S3Credentials
    r2_endpoint: str
    buckets: dict[str, str]
    queue_url: pulumi.Output[str]
    ssh_public_keys: tuple[str, ...]
    ssh_private_key: pulumi.Output[str]
    manifest: Path = DEFAULT_MANIFEST


@dataclass(frozen=True)
class _HostSpec:
    """One host's part of the arguments (its index picks its SSH machine, if any)."""

    name: str
    index: int
    args: GpuHostsArgs
    token: pulumi.Output[str]
    ssh_key_ids: list[pulumi.Output[str]]

    @property
    def settings(self) -> GpuSettings:
        return self.args.settings

    @property
    def hostname(self) -> str:
        return f"{self.args.prefix}-{self.name}"

    @property
    def ssh_host(self) -> SshHost:
        return self.settings.ssh_hosts[self.index]

    @property
    def hourly_eur(self) -> float:
        if self.settings.provider == "ssh" and self.ssh_host.hourly_eur is not None:
            return self.ssh_host.hourly_eur
        return self.settings.hourly_eur


class GpuHost(pulumi.ComponentResource):
    """One GPU host: its machine, its bootstrap, and when it is ready.

    Its registered properties are what the policy pack checks (an idle limit, no public port
    but key-only SSH).
    """

    def __init__(self, spec: _HostSpec, opts: pulumi.ResourceOptions | None = None) -> None:
        s = spec.settings
        props = {
            "provider": s.provider,
            "idleMinutes": s.idle_minutes,
            "publicPorts": public_ports(s.provider),
            "sshAuth": GPU_SSH_AUTH if s.provider == "verda" else "",
            "comfyuiListen": COMFYUI_LISTEN,
            "processesPerGpu": s.processes_per_gpu,
            "tailnetName": spec.hostname,
        }
        super().__init__("comfy:workshop:GpuHost", spec.name, props, opts)
        self.name = spec.name
        self.tailnet_name = spec.hostname
        script = self._bootstrap(spec)
        if s.provider == "verda":
            self.machine, ready = self._verda(spec, script)
            self.hourly_eur: pulumi.Output[Any] = (
                pulumi.Output.from_input(s.hourly_eur)
                if s.hourly_eur > 0
                else self.machine.hourlyEur  # type: ignore[attr-defined]
            )
        else:
            ready = self._ssh(spec, script)
            self.machine = ready
            self.hourly_eur = pulumi.Output.from_input(spec.hourly_eur)
        self.ready = ready
        # The bootstrap's (or the wait's) last word is the host's tailnet address.
        self.tailnet_ip = ready.stdout.apply(lambda out: ((out or "").split() or [""])[-1])
        self.outputs = pulumi.Output.all(
            tailnetName=self.tailnet_name,
            tailnetIp=self.tailnet_ip,
            hourlyEur=self.hourly_eur,
            provider=s.provider,
        )
        self.register_outputs({"tailnetName": self.tailnet_name, "hourlyEur": self.hourly_eur})

    def _bootstrap(self, spec: _HostSpec) -> pulumi.Output[str]:
        a, s = spec.args, spec.settings
        manifest_text = a.manifest.read_text()
        shared_dir = spec.ssh_host.shared_models_dir if s.provider == "ssh" else ""

        def render(v: dict[str, str]) -> str:
            return render_script(
                HostBootstrap(
                    host=spec.name,
                    hostname=spec.hostname,
                    provider=s.provider,
                    worker_image=s.worker_image,
                    queue_url=v["queue_url"],
                    processes_per_gpu=s.processes_per_gpu,
                    idle_minutes=s.idle_minutes,
                    hourly_eur=spec.hourly_eur,
                    tailscale_auth_key=v["auth_key"],
                    worker_token=v["token"],
                    storage_endpoint=a.r2_endpoint,
                    user_files_bucket=a.buckets["user-files"],
                    models_bucket=a.buckets["models"],
                    s3_access_key_id=v["key_id"],
                    s3_secret_access_key=v["secret"],
                    manifest_text=manifest_text,
                    shared_models_dir=shared_dir,
                    shared_models_nfs=s.shared_models_nfs if s.provider == "verda" else "",
                    # A rented Verda host turns itself off if its bootstrap fails; a machine
                    # reached over SSH reports the failure to `pulumi up` instead.
                    poweroff_on_failure=s.provider == "verda",
                )
            )

        return pulumi.Output.secret(
            pulumi.Output.all(
                queue_url=a.queue_url,
                auth_key=a.tailscale_auth_key,
                token=spec.token,
                key_id=a.r2.access_key_id,
                secret=a.r2.secret_access_key,
            ).apply(render)
        )

    def _child(self, extra: pulumi.ResourceOptions | None = None) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions.merge(pulumi.ResourceOptions(parent=self), extra)

    def _verda(
        self, spec: _HostSpec, script: pulumi.Output[str]
    ) -> tuple[VerdaInstance, command.remote.Command]:
        s = spec.settings
        instance = VerdaInstance(
            f"{spec.name}-instance",
            {
                "hostname": spec.hostname,
                "description": f"ComfyUI workshop {spec.args.prefix} {spec.name}",
                "instanceType": s.instance_type,
                "image": s.image,
                "location": s.location,
                "spot": s.spot,
                "osVolumeGb": s.os_volume_gb,
                "sshKeyIds": spec.ssh_key_ids,
                "startupScript": script,
                "running": True,
            },
            opts=self._child(pulumi.ResourceOptions(additional_secret_outputs=["startupScript"])),
        )
        connection = command.remote.ConnectionArgs(
            host=instance.ip,  # type: ignore[attr-defined]
            port=VERDA_SSH_PORT,
            user=s.ssh_user,
            private_key=spec.args.ssh_private_key,
            dial_error_limit=60,
            per_dial_timeout=15,
        )
        ready = command.remote.Command(
            f"{spec.name}-ready",
            connection=connection,
            create=WAIT_FOR_BOOTSTRAP,
            triggers=[instance.instanceId],  # type: ignore[attr-defined]
            opts=self._child(pulumi.ResourceOptions(depends_on=[instance])),
        )
        return instance, ready

    def _ssh(self, spec: _HostSpec, script: pulumi.Output[str]) -> command.remote.Command:
        machine = spec.ssh_host
        connection = command.remote.ConnectionArgs(
            host=machine.address,
            port=machine.port,
            user=machine.user,
            private_key=spec.args.ssh_private_key,
            dial_error_limit=10,
        )
        return command.remote.Command(
            f"{spec.name}-bootstrap",
            connection=connection,
            create=AS_ROOT,
            update=AS_ROOT,
            delete=TEARDOWN,
            stdin=script,
            # Another machine is a new host: bootstrap it, then tear the old one down.
            triggers=[machine.address, machine.port],
            opts=self._child(pulumi.ResourceOptions(additional_secret_outputs=["stdin"])),
        )


class GpuHosts(pulumi.ComponentResource):
    """The fleet: worker tokens for the queue, one GpuHost per configured host, their cost."""

    def __init__(self, name: str, args: GpuHostsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("comfy:workshop:GpuHosts", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        s = args.settings
        self.names = list(s.host_names)
        # The queue tells worker tokens from participant tokens by the prefix
        # (services/queue/auth.py): a token without it is never accepted.
        self.worker_tokens: dict[str, pulumi.Output[str]] = {
            n: pulumi.Output.secret(
                random.RandomPassword(
                    f"worker-token-{n}", length=48, special=False, opts=child
                ).result.apply(lambda t: WORKER_TOKEN_PREFIX + t)
            )
            for n in s.token_names
        }
        self.worker_tokens_json = pulumi.Output.secret(
            pulumi.Output.all(**self.worker_tokens).apply(
                lambda ts: json.dumps(dict(ts), sort_keys=True)
            )
        )
        key_ids: list[pulumi.Output[str]] = []
        if s.provider == "verda" and self.names:
            key_ids = [
                VerdaSshKey(
                    f"verda-ssh-key-{i}",
                    {"name": f"{args.prefix}-{i}", "publicKey": key},
                    opts=child,
                ).id
                for i, key in enumerate(args.ssh_public_keys)
            ]
        self.hosts = {
            n: GpuHost(_HostSpec(n, i, args, self.worker_tokens[n], key_ids), opts=child)
            for i, n in enumerate(self.names)
        }
        self.outputs: pulumi.Output[Any] = (
            pulumi.Output.all(**{n: h.outputs for n, h in self.hosts.items()})
            if self.hosts
            else pulumi.Output.from_input({})
        )
        self.fleet_eur_per_hour = pulumi.Output.all(
            *[h.hourly_eur for h in self.hosts.values()]
        ).apply(lambda prices: round(sum(float(p or 0) for p in prices), 4))
        self.register_outputs({"hosts": self.names})
