"""The Hetzner VPS: firewall, server, data volume, tailnet join, DNS and its origin certificate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_cloudflare as cloudflare
import pulumi_command as command
import pulumi_hcloud as hcloud

from infra.catalogue import orderable_vps
from infra.cloudinit import JOIN_TAILNET, render_vps
from infra.proxy import HTTPS_PORT
from infra.tailnet import vps_join_key

# `cloud-init status --wait`: 0 done, 2 done with recoverable warnings, 1 failed.
WAIT_FOR_CLOUD_INIT = """set -eu
rc=0
cloud-init status --wait >/dev/null || rc=$?
if [ "$rc" -ne 0 ] && [ "$rc" -ne 2 ]; then cloud-init status --long >&2; exit 1; fi
mountpoint -q /mnt/data
docker info >/dev/null
command -v tailscale >/dev/null
"""
READ_CSR = "cat /srv/comfy/tls/origin.csr"
JOIN = f"sudo -n {JOIN_TAILNET}"
#: Zone settings the origin relies on. "Full (strict)": Cloudflare verifies the Origin CA
#: certificate. "Always Use HTTPS": plain-HTTP visitors get their redirect at the edge, so
#: Cloudflare never needs the origin's port 80 (in Full modes it would otherwise connect to
#: the origin with the visitor's scheme).
#: resource name -> (setting id, value); "ssl-strict" keeps the name it always had.
ZONE_SETTINGS = {
    "ssl-strict": ("ssl", "strict"),
    "always-use-https": ("always_use_https", "on"),
}


@dataclass(frozen=True)
class VpsArgs:
    """Everything the VPS needs from config, storage and the tailnet."""

    prefix: str
    domain: str
    zone_id: str
    server_type: str
    location: str
    image: str
    volume_gb: int
    swap_gb: int
    ssh_public_keys: tuple[str, ...]
    ssh_private_key: pulumi.Output[str]
    admin_cidrs: tuple[str, ...]
    tailnet_acl: pulumi.Resource  # the join key's tag must exist first
    manage_zone_ssl: bool


def firewall_rules(
    admin_cidrs: Sequence[str], cloudflare_ranges: pulumi.Input[Sequence[str]]
) -> list[hcloud.FirewallRuleArgs]:
    """443 from Cloudflare only, SSH from the admins, nothing else (outbound is open).

    Without the first restriction anyone could skip Cloudflare by connecting to the
    server's address directly.
    """
    return [
        hcloud.FirewallRuleArgs(
            direction="in",
            protocol="tcp",
            port=str(HTTPS_PORT),
            source_ips=cloudflare_ranges,
            description="https from cloudflare",
        ),
        hcloud.FirewallRuleArgs(
            direction="in",
            protocol="tcp",
            port="22",
            source_ips=list(admin_cidrs),
            description="ssh from admins",
        ),
    ]


class Vps(pulumi.ComponentResource):
    """A small shared-vCPU server, ready (cloud-init done, volume mounted) when `ready` is,
    on the tailnet at `tailnet_ip`."""

    def __init__(self, name: str, args: VpsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("comfy:workshop:Vps", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        # Hetzner names are unique per project: a replacement must delete the old one first
        # (create-before-delete would fail with "name is already used").
        unique_name = pulumi.ResourceOptions.merge(
            child, pulumi.ResourceOptions(delete_before_replace=True)
        )
        keys = [
            hcloud.SshKey(f"ssh-key-{i}", name=f"{args.prefix}-{i}", public_key=k, opts=unique_name)
            for i, k in enumerate(args.ssh_public_keys)
        ]
        # Cloudflare's published ranges, read at every `up` (the firewall and Caddy's
        # trusted proxies follow when Cloudflare adds a range).
        ranges = cloudflare.get_ip_ranges_output()
        self.cloudflare_ranges: pulumi.Output[list[str]] = pulumi.Output.all(
            ranges.ipv4_cidrs, ranges.ipv6_cidrs
        ).apply(lambda r: [*(r[0] or []), *(r[1] or [])])
        self.firewall = hcloud.Firewall(
            "firewall",
            name=f"{args.prefix}-vps",
            rules=firewall_rules(args.admin_cidrs, self.cloudflare_ranges),
            opts=child,
        )
        self.volume = hcloud.Volume(
            "data",
            name=f"{args.prefix}-data",
            size=args.volume_gb,
            location=args.location,
            format="ext4",
            opts=child,
        )
        hostname = f"{args.prefix}-vps"
        # Secret by policy, although it holds nothing secret any more (see cloud-init/vps.yaml).
        user_data = pulumi.Output.secret(
            self.volume.id.apply(
                lambda volume_id: render_vps(
                    domain=args.domain,
                    hostname=hostname,
                    volume_id=volume_id,
                    ssh_public_keys=args.ssh_public_keys,
                    swap_gb=args.swap_gb,
                )
            )
        )
        # Pre-flight: both resolve only once Hetzner's catalogue confirmed them.
        server_type, image = orderable_vps(args.server_type, args.location, args.image)
        self.server = hcloud.Server(
            "server",
            name=hostname,
            server_type=server_type,
            image=image,
            location=args.location,
            ssh_keys=[k.id for k in keys],
            firewall_ids=[self.firewall.id.apply(int)],
            public_nets=[hcloud.ServerPublicNetArgs(ipv4_enabled=True, ipv6_enabled=True)],
            user_data=user_data,
            labels={"workshop": args.prefix},
            # Any cloud-init change replaces the server. Deleting first frees its name,
            # and Pulumi first deletes the dependents that are replaced with it, among
            # them the backup step (its trigger is the server id): the backup runs
            # against the old server before that server goes.
            opts=pulumi.ResourceOptions.merge(
                unique_name, pulumi.ResourceOptions(additional_secret_outputs=["userData"])
            ),
        )
        self.attachment = hcloud.VolumeAttachment(
            "data-attachment",
            server_id=self.server.id.apply(int),
            volume_id=self.volume.id.apply(int),
            automount=False,
            opts=child,
        )
        self.ipv4 = self.server.ipv4_address
        self.ipv6 = self.server.ipv6_address
        # A fresh server needs a minute or two before sshd answers: retry for ~10 minutes
        # instead of the default 10 attempts.
        self.connection = command.remote.ConnectionArgs(
            host=self.ipv4,
            user="deploy",
            private_key=args.ssh_private_key,
            dial_error_limit=40,
            per_dial_timeout=15,
        )
        # Everything on the VPS waits for this: cloud-init finished, volume mounted,
        # Docker and tailscaled installed.
        self.ready = command.remote.Command(
            "cloud-init-done",
            connection=self.connection,
            create=WAIT_FOR_CLOUD_INIT,
            triggers=[self.server.id],
            opts=pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(depends_on=[self.server, self.attachment])
            ),
        )
        # A new key for each server (a replaced server must not meet its predecessor's spent
        # single-use key), sent on stdin; stdout is the VPS's tailnet IPv4 address.
        self.tailnet_key = vps_join_key(args.prefix, self.server.id, args.tailnet_acl, self)
        self.tailnet_join = command.remote.Command(
            "tailnet-join",
            connection=self.connection,
            create=JOIN,
            stdin=pulumi.Output.secret(self.tailnet_key.key),
            triggers=[self.server.id],
            opts=pulumi.ResourceOptions.merge(
                child,
                pulumi.ResourceOptions(
                    depends_on=[self.ready], additional_secret_outputs=["stdin"]
                ),
            ),
        )
        self.tailnet_ip = self.tailnet_join.stdout.apply(lambda s: (s or "").strip())
        csr = command.remote.Command(
            "origin-csr",
            connection=self.connection,
            create=READ_CSR,
            triggers=[self.server.id],
            opts=pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(depends_on=[self.ready])
            ),
        )
        # Origin CA, not ACME: see docs/infrastructure.md ("TLS at the origin").
        self.origin_cert = cloudflare.OriginCaCertificate(
            "origin-cert",
            csr=csr.stdout,
            hostnames=[args.domain],
            request_type="origin-ecc",
            requested_validity=365,
            opts=child,
        )
        # Proxied A record only: visitors still get IPv6 from Cloudflare's edge. An AAAA
        # origin record would let Cloudflare connect over IPv6, which reaches Caddy through
        # Docker's userland proxy (the containers' networks are IPv4-only) and hides
        # Cloudflare's address from `trusted_proxies`.
        self.dns_v4 = cloudflare.DnsRecord(
            "dns-a",
            zone_id=args.zone_id,
            name=args.domain,
            type="A",
            content=self.ipv4,
            proxied=True,
            ttl=1,
            opts=child,
        )
        if args.manage_zone_ssl:
            # Retained: deleting a zone setting resets it to Cloudflare's default, so the
            # nightly destroy would leave the zone in its default mode until the morning.
            # The settings outlive the stack; the next `up` re-asserts them.
            kept = pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(retain_on_delete=True)
            )
            for name, (setting, value) in ZONE_SETTINGS.items():
                cloudflare.ZoneSetting(
                    name, zone_id=args.zone_id, setting_id=setting, value=value, opts=kept
                )
        self.register_outputs({"ipv4": self.ipv4, "ipv6": self.ipv6})
