"""The whole stack as one importable function, so tests can build a fresh one per test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pulumi

from infra.config import WorkshopConfig
from infra.control_plane import ControlPlane, ControlPlaneArgs
from infra.cost import hourly_cost, price_warning
from infra.credentials import Credentials, CredentialsArgs, keep_generated_secrets
from infra.gpu import GpuHosts, GpuHostsArgs
from infra.storage import Storage, StorageArgs
from infra.tailnet import Tailnet, TailnetArgs
from infra.vps import Vps, VpsArgs
from services.contracts import QUEUE_PORT


def build(config: WorkshopConfig, opts: pulumi.ResourceOptions | None = None) -> dict[str, Any]:
    """Declare every resource and return the stack outputs (secret ones already secret).

    `opts` is merged into each top-level component (tests pass a transformation here).
    Every generated secret in the stack is protected (`keep_generated_secrets`).
    """
    stack_wide = pulumi.ResourceOptions(transformations=[keep_generated_secrets])

    def top(extra: pulumi.ResourceOptions | None = None) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions.merge(pulumi.ResourceOptions.merge(stack_wide, opts), extra)

    storage = Storage(
        "storage",
        StorageArgs(
            account_id=config.cloudflare_account_id,
            prefix=config.prefix,
            location=config.r2_location,
        ),
        opts=top(),
    )
    tailnet = Tailnet(
        "tailnet", TailnetArgs(admin_emails=config.admin_emails, prefix=config.prefix), opts=top()
    )
    credentials = Credentials(
        "credentials",
        CredentialsArgs(
            prefix=config.prefix,
            usernames=config.usernames,
            given_passwords=dict(config.participant_passwords),
            admin_password=config.admin_password,
        ),
        opts=top(),
    )
    private_key = pulumi.Output.secret(Path(config.ssh_private_key_file).read_text())
    vps = Vps(
        "vps",
        VpsArgs(
            prefix=config.prefix,
            domain=config.domain,
            zone_id=config.cloudflare_zone_id,
            server_type=config.vps_type,
            location=config.vps_location,
            image=config.vps_image,
            volume_gb=config.data_volume_gb,
            swap_gb=config.swap_gb,
            ssh_public_keys=config.ssh_public_keys,
            ssh_private_key=private_key,
            admin_cidrs=config.admin_cidrs,
            tailnet_acl=tailnet.acl,
            manage_zone_ssl=config.manage_zone_ssl,
        ),
        opts=top(),
    )
    gpu_hosts = GpuHosts(
        "gpu-hosts",
        GpuHostsArgs(
            settings=config.gpu,
            prefix=config.prefix,
            tailscale_auth_key=tailnet.gpu_key.key,
            r2=storage.gpu_credentials,
            r2_endpoint=storage.endpoint,
            buckets=storage.bucket_names,
            queue_url=vps.tailnet_ip.apply(lambda ip: f"http://{ip}:{QUEUE_PORT}"),
            ssh_public_keys=config.ssh_public_keys,
            ssh_private_key=private_key,
        ),
        opts=top(),
    )
    ControlPlane(
        "control-plane",
        ControlPlaneArgs(
            domain=config.domain,
            queue_mode=config.queue_mode,
            queue_image=config.queue_image,
            gateway_image=config.gateway_image,
            redis_image=config.redis_image,
            caddy_image=config.caddy_image,
            platform=config.vps_platform,
            ssh_host=vps.ipv4,
            ssh_private_key_file=config.ssh_private_key_file,
            connection=vps.connection,
            ready=vps.ready,
            server=vps.server,
            tailnet_ip=vps.tailnet_ip,
            origin_cert_pem=vps.origin_cert.certificate,
            users_json=credentials.users_json,
            admin_password=credentials.admin_password,
            token_secret=credentials.token_secret,
            worker_tokens_json=gpu_hosts.worker_tokens_json,
            r2_endpoint=storage.endpoint,
            user_files_bucket=storage.bucket_names["user-files"],
            r2=storage.vps_credentials,
            trusted_proxies=vps.cloudflare_ranges,
        ),
        opts=top(),
    )

    base = f"https://{config.domain}"
    cost = hourly_cost(
        config.vps_type, config.data_volume_gb, config.gpu.count, config.gpu.hourly_eur
    )
    if warning := price_warning(config.vps_type):
        pulumi.log.warn(warning)
    outputs: dict[str, Any] = {
        "workshopUrl": f"{base}/",
        "adminUrl": f"{base}/admin/",
        "participantUrls": {u: f"{base}/{u}/" for u in config.usernames},
        "credentials": pulumi.Output.secret(
            pulumi.Output.all(
                admin=credentials.admin_password,
                participants=pulumi.Output.all(
                    **{u: credentials.passwords[u] for u in config.usernames}
                ),
                # What each GPU host's worker presents to the queue (`cqw_...`).
                workers=gpu_hosts.worker_tokens_json.apply(json.loads),
            )
        ),
        "vpsIpv4": vps.ipv4,
        "vpsIpv6": vps.ipv6,
        "vpsTailnetIp": vps.tailnet_ip,
        "buckets": storage.bucket_names,
        "estimatedCostEurPerHour": None if cost.total is None else round(cost.total, 4),
        # Each GPU host (tailnet name and address, EUR/hour) and the fleet's EUR/hour.
        "gpuHosts": gpu_hosts.outputs,
        "gpuFleetEurPerHour": gpu_hosts.fleet_eur_per_hour,
    }
    return outputs


def export(outputs: dict[str, Any]) -> None:
    """Export the outputs of `build` as stack outputs."""
    for key, value in outputs.items():
        pulumi.export(key, value)
