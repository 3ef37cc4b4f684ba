"""The tailnet policy as code, and the auth keys the VPS and GPU hosts join with."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_tailscale as tailscale

from services.contracts import COMFYUI_PORT, QUEUE_PORT, REDIS_PORT

ADMIN_GROUP = "group:comfy-admins"
TAG_VPS = "tag:comfy-vps"
TAG_GPU = "tag:comfy-gpu"
# Admins may reach every port except Redis's: Redis is never published, and the
# policy says so too, so a future mistake cannot silently expose it on the tailnet.
ADMIN_PORTS = f"0-{REDIS_PORT - 1},{REDIS_PORT + 1}-65535"


def acl_document(admin_emails: tuple[str, ...]) -> dict[str, Any]:
    """The whole tailnet policy, including Tailscale's own `tests` that assert it.

    The `tests` use tags as sources only: Tailscale evaluates a tag from the policy alone,
    but a test whose source is a user fails ("no associated IPs for user") until that user
    has an approved device, which on the first `up` of a fresh tailnet nobody has. What
    admins may reach is asserted by tests/infra/test_security.py instead.

    No `ssh` section: no node runs Tailscale SSH (`tailscale up --ssh`); admins use OpenSSH
    on port 22, which the `acls` open to them. A host that enables Tailscale SSH must add
    its rule here (tests/infra/test_security.py checks that the two agree).
    """
    return {
        "groups": {ADMIN_GROUP: list(admin_emails)},
        "tagOwners": {TAG_VPS: [ADMIN_GROUP], TAG_GPU: [ADMIN_GROUP]},
        "acls": [
            {"action": "accept", "src": [ADMIN_GROUP], "dst": [f"*:{ADMIN_PORTS}"]},
            {"action": "accept", "src": [TAG_GPU], "dst": [f"{TAG_VPS}:{QUEUE_PORT}"]},
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
                    f"{TAG_GPU}:{COMFYUI_PORT}",
                ],
            },
            {
                "src": TAG_VPS,
                "deny": [f"{TAG_GPU}:22", f"{TAG_GPU}:{COMFYUI_PORT}", f"{TAG_VPS}:{REDIS_PORT}"],
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


def vps_join_key(
    prefix: str, server_id: pulumi.Input[str], acl: pulumi.Resource, parent: pulumi.Resource
) -> tailscale.TailnetKey:
    """The single-use key one VPS joins with, made for that server and renewed with it.

    Its description names the server, so a replaced server (new id) gets a new key: every
    argument of a tailnet key forces a new key, and the engine recreates a dependent whose
    input comes from a replaced resource. The key is sent to the VPS over SSH (never in the
    user data, which any container could read from the metadata address). Once used it
    is invalid; `recreate_if_invalid="never"` keeps it in the state instead of minting a new
    one on every `up` (the node is joined; the key is not needed again).
    """
    return tailscale.TailnetKey(
        "vps-key",
        description=pulumi.Output.from_input(server_id).apply(
            lambda sid: f"vps {sid} {prefix}"[:50]
        ),
        reusable=False,
        ephemeral=False,
        preauthorized=True,
        expiry=3600,
        recreate_if_invalid="never",
        tags=[TAG_VPS],
        opts=pulumi.ResourceOptions(
            parent=parent, depends_on=[acl], additional_secret_outputs=["key"]
        ),
    )
