"""R2 buckets that outlive the stack, and the two scoped S3 credentials that use them."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import pulumi
import pulumi_cloudflare as cloudflare

# Cloudflare's account-level permission groups for R2 object access (ids are global
# constants in Cloudflare's API; see docs/infrastructure.md).
R2_ITEM_READ = "6a018a9f2fc74eb6b293b0c548f38b39"  # Workers R2 Storage Bucket Item Read
R2_ITEM_WRITE = "2efd5506f9c8494dacb1fa10a3e7d5b6"  # Workers R2 Storage Bucket Item Write

BUCKETS = ("models", "cache", "user-files")

# Who may do what, bucket by bucket. Tests and docs read this table.
VPS_SCOPES: dict[str, tuple[str, ...]] = {
    "user-files": ("read", "write"),
    "cache": ("read",),
}
GPU_SCOPES: dict[str, tuple[str, ...]] = {
    "models": ("read",),
    "cache": ("read",),
    "user-files": ("write",),
}
_GROUP = {"read": R2_ITEM_READ, "write": R2_ITEM_WRITE}


@dataclass(frozen=True)
class StorageArgs:
    """Where the buckets live and what they are called."""

    account_id: str
    prefix: str
    location: str


@dataclass(frozen=True)
class S3Credentials:
    """S3-compatible credentials derived from a scoped API token (secret parts are secret)."""

    access_key_id: pulumi.Output[str]
    secret_access_key: pulumi.Output[str]
    token: pulumi.Resource  # users must depend on it, so it outlives them on destroy


def bucket_resource(account_id: str, bucket: str) -> str:
    """The API-token resource name Cloudflare uses for one R2 bucket."""
    return f"com.cloudflare.edge.r2.bucket.{account_id}_default_{bucket}"


def token_policies(account_id: str, names: dict[str, str], scopes: dict[str, tuple[str, ...]]):
    """One allow-policy per permission level, each naming exactly the buckets it covers."""
    by_perm: dict[str, list[str]] = {}
    for bucket, perms in scopes.items():
        for perm in perms:
            by_perm.setdefault(perm, []).append(bucket)
    return [
        cloudflare.ApiTokenPolicyArgs(
            effect="allow",
            permission_groups=[cloudflare.ApiTokenPolicyPermissionGroupArgs(id=_GROUP[perm])],
            resources=json.dumps(
                {bucket_resource(account_id, names[b]): "*" for b in sorted(buckets)},
                sort_keys=True,
            ),
        )
        for perm, buckets in sorted(by_perm.items())
    ]


class Storage(pulumi.ComponentResource):
    """Buckets are protected and retained: `pulumi destroy --exclude-protected` keeps them."""

    def __init__(self, name: str, args: StorageArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("comfy:workshop:Storage", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.bucket_names = {b: f"{args.prefix}-{b}" for b in BUCKETS}
        self.buckets = {
            b: cloudflare.R2Bucket(
                f"bucket-{b}",
                account_id=args.account_id,
                name=self.bucket_names[b],
                location=args.location,
                # Retained so a destroy never deletes data; protected so the bucket also
                # stays in the state across the daily destroy (a retained-only bucket would
                # collide with itself on the next morning's create).
                opts=pulumi.ResourceOptions.merge(
                    child, pulumi.ResourceOptions(protect=True, retain_on_delete=True)
                ),
            )
            for b in BUCKETS
        }
        self.endpoint = f"https://{args.account_id}.r2.cloudflarestorage.com"
        self.vps_credentials = self._credentials("vps", args, VPS_SCOPES, child)
        self.gpu_credentials = self._credentials("gpu", args, GPU_SCOPES, child)
        self.register_outputs({"buckets": self.bucket_names, "endpoint": self.endpoint})

    def _credentials(
        self,
        who: str,
        args: StorageArgs,
        scopes: dict[str, tuple[str, ...]],
        opts: pulumi.ResourceOptions,
    ) -> S3Credentials:
        token = cloudflare.ApiToken(
            f"r2-token-{who}",
            name=f"{args.prefix}-r2-{who}",
            policies=token_policies(args.account_id, self.bucket_names, scopes),
            opts=pulumi.ResourceOptions.merge(
                opts,
                pulumi.ResourceOptions(
                    depends_on=[self.buckets[b] for b in scopes],
                    additional_secret_outputs=["value"],
                ),
            ),
        )
        # R2's S3 credentials for a token: key id = token id, secret = sha256(token value).
        return S3Credentials(
            token=token,
            access_key_id=token.id,
            secret_access_key=pulumi.Output.secret(
                token.value.apply(lambda v: hashlib.sha256((v or "").encode()).hexdigest())
            ),
        )
