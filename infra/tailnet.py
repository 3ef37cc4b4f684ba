"""The tailnet policy as code, and the auth keys the VPS and GPU hosts join with."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_tailscale as tailscale

from services.contracts import QUEUE_PORT, REDIS_PORT

ADMIN_GROUP = "group:comfy-admins"
TAG_VPS = "tag:comfy-vps"
TAG_GPU = "tag:comfy-gpu"
# Admins may reach every port except Redis's: Redis is never published, and the
# policy says so too, so a future mistake cannot silently expose it on the tailnet.
ADMIN_PORTS = f"0-{REDIS_PORT - 1},{REDIS_PORT + 1}-65535"


def acl_document(admin_emails: tuple[str, ...]) -> dict[str, Any]:
    """The whole tailnet policy, including Tailscale's own `tests` that assert it."""
    first_admin = admin_emails[0]
    return {
        "groups": {ADMIN_GROUP: list(admin_emails)},
        "tagOwners": {TAG_VPS: [ADMIN_GROUP], TAG_GPU: [ADMIN_GROUP]},
        "acls": [
            {"action": "accept", "src": [ADMIN_GROUP], "dst": [f"*:{ADMIN_PORTS}"]},
            {"action": "accept", "src": [TAG_GPU], "dst": [f"{TAG_VPS}:{QUEUE_PORT}"]},
        ],
        "ssh": [
            {
                "action": "check",
                "src": [ADMIN_GROUP],
                "dst": [TAG_VPS, TAG_GPU],
                "users": ["root", "deploy", "autogroup:nonroot"],
            }
        ],
        "tests": [
            {
                "src": TAG_GPU,
                "accept": [f"{TAG_VPS}:{QUEUE_PORT}"],
                "deny": [
                    f"{TAG_VPS}:{REDIS_PORT}",
                    f"{TAG_VPS}:22",
                    f"{TAG_VPS}:443",
                    f"{TAG_GPU}:22",
                    f"{TAG_GPU}:8188",
                ],
            },
            {
                "src": TAG_VPS,
                "deny": [f"{TAG_GPU}:22", f"{TAG_GPU}:8188", f"{TAG_VPS}:{REDIS_PORT}"],
            },
            {
                "src": first_admin,
                "accept": [f"{TAG_VPS}:22", f"{TAG_VPS}:{QUEUE_PORT}", f"{TAG_GPU}:22"],
                "deny": [f"{TAG_VPS}:{REDIS_PORT}", f"{TAG_GPU}:{REDIS_PORT}"],
            },
        ],
    }


@dataclass(frozen=True)
class TailnetArgs:
    """Who administers the tailnet and how names are prefixed."""

    admin_emails: tuple[str, ...]
    prefix: str


class Tailnet(pulumi.ComponentResource):
    """Owns the tailnet policy; use a tailnet dedicated to the workshop (it is overwritten)."""

    def __init__(self, name: str, args: TailnetArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("comfy:workshop:Tailnet", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.acl_json = json.dumps(acl_document(args.admin_emails), indent=2, sort_keys=True)
        self.acl = tailscale.Acl(
            "acl",
            acl=self.acl_json,
            overwrite_existing_content=True,
            opts=child,
        )
        after_acl = pulumi.ResourceOptions.merge(
            child,
            pulumi.ResourceOptions(depends_on=[self.acl], additional_secret_outputs=["key"]),
        )
        # One VPS joins once: single-use, pre-approved, short-lived.
        self.vps_key = tailscale.TailnetKey(
            "vps-key",
            description=f"{args.prefix} vps"[:50],
            reusable=False,
            ephemeral=False,
            preauthorized=True,
            expiry=3600,
            # Spent after the VPS joins: recreating it would change the user data and
            # so replace the server on the next `up`.
            recreate_if_invalid="never",
            tags=[TAG_VPS],
            opts=after_acl,
        )
        # GPU hosts come and go: reusable and ephemeral, so a dead host leaves the tailnet.
        self.gpu_key = tailscale.TailnetKey(
            "gpu-key",
            description=f"{args.prefix} gpu"[:50],
            reusable=True,
            ephemeral=True,
            preauthorized=True,
            expiry=86400,
            tags=[TAG_GPU],
            opts=after_acl,
        )
        self.register_outputs({"acl": self.acl.id})
