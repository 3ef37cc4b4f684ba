"""The Hetzner VPS: firewall, server, data volume, DNS and its origin certificate."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_cloudflare as cloudflare
import pulumi_command as command
import pulumi_hcloud as hcloud

from infra.cloudinit import render_vps

WORLD = ["0.0.0.0/0", "::/0"]
PUBLIC_TCP_PORTS = ("80", "443")

# `cloud-init status --wait`: 0 done, 2 done with recoverable warnings, 1 failed.
WAIT_FOR_CLOUD_INIT = """set -eu
rc=0
cloud-init status --wait >/dev/null || rc=$?
if [ "$rc" -ne 0 ] && [ "$rc" -ne 2 ]; then cloud-init status --long >&2; exit 1; fi
mountpoint -q /mnt/data
docker info >/dev/null
cat /srv/comfy/tailscale-ip
"""
READ_CSR = "cat /srv/comfy/tls/origin.csr"


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
    tailscale_auth_key: pulumi.Output[str]
    manage_zone_ssl: bool


def firewall_rules(admin_cidrs: tuple[str, ...]) -> list[hcloud.FirewallRuleArgs]:
    """80/443 from the world, SSH from the admins, nothing else (outbound is open)."""
    rules = [
        hcloud.FirewallRuleArgs(
            direction="in", protocol="tcp", port=port, source_ips=WORLD, description=f"https {port}"
        )
        for port in PUBLIC_TCP_PORTS
    ]
    rules.append(
        hcloud.FirewallRuleArgs(
            direction="in",
            protocol="tcp",
            port="22",
            source_ips=list(admin_cidrs),
            description="ssh from admins",
        )
    )
    return rules


class Vps(pulumi.ComponentResource):
    """A CX22-class server that is ready (cloud-init done, volume mounted) when `ready` is."""

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
        self.firewall = hcloud.Firewall(
            "firewall",
            name=f"{args.prefix}-vps",
            rules=firewall_rules(args.admin_cidrs),
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
        user_data = pulumi.Output.secret(
            pulumi.Output.all(self.volume.id, args.tailscale_auth_key).apply(
                lambda v: render_vps(
                    domain=args.domain,
                    hostname=hostname,
                    volume_id=v[0],
                    tailscale_auth_key=v[1],
                    ssh_public_keys=args.ssh_public_keys,
                    swap_gb=args.swap_gb,
                )
            )
        )
        self.server = hcloud.Server(
            "server",
            name=hostname,
            server_type=args.server_type,
            image=args.image,
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
        # Docker up. Its stdout is the VPS's tailnet IPv4 address.
        self.ready = command.remote.Command(
            "cloud-init-done",
            connection=self.connection,
            create=WAIT_FOR_CLOUD_INIT,
            triggers=[self.server.id],
            opts=pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(depends_on=[self.server, self.attachment])
            ),
        )
        self.tailnet_ip = self.ready.stdout.apply(lambda s: (s or "").strip())
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
        self.dns_v6 = cloudflare.DnsRecord(
            "dns-aaaa",
            zone_id=args.zone_id,
            name=args.domain,
            type="AAAA",
            content=self.ipv6,
            proxied=True,
            ttl=1,
            opts=child,
        )
        if args.manage_zone_ssl:
            # Cloudflare must verify the origin certificate ("Full (strict)").
            cloudflare.ZoneSetting(
                "ssl-strict", zone_id=args.zone_id, setting_id="ssl", value="strict", opts=child
            )
        self.register_outputs({"ipv4": self.ipv4, "ipv6": self.ipv6})
