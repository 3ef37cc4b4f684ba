"""Participant, admin and service secrets: generated with pulumi-random unless configured.

A generated secret exists only in the Pulumi state, so it survives the nightly
`pulumi destroy --exclude-protected` only if it is protected: otherwise every morning would
bring new passwords, a new token secret (sessions restored from the backup would no longer
verify) and new worker tokens (the GPU hosts' would be refused). `keep_generated_secrets`
protects every `RandomPassword` of the stack, whichever component declares it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_random as random


@dataclass(frozen=True)
class CredentialsArgs:
    """Which users exist and which passwords the organizers chose themselves."""

    prefix: str
    usernames: tuple[str, ...]
    given_passwords: dict[str, str]
    admin_password: Any  # Output[str] | None


def _argon2_hash(prefix: str, user: str, password: str) -> str:
    """Hash an organizer-chosen password; the salt is stable so `up` is idempotent."""
    from argon2 import PasswordHasher
    from argon2.low_level import Type, hash_secret

    ph = PasswordHasher()
    salt = hashlib.sha256(f"{prefix}/{user}".encode()).digest()[:16]
    return hash_secret(
        password.encode(),
        salt,
        time_cost=ph.time_cost,
        memory_cost=ph.memory_cost,
        parallelism=ph.parallelism,
        hash_len=ph.hash_len,
        type=Type.ID,
    ).decode()


RANDOM_PASSWORD = "random:index/randomPassword:RandomPassword"  # noqa: S105 (a type)


def keep_generated_secrets(
    args: pulumi.ResourceTransformationArgs,
) -> pulumi.ResourceTransformationResult | None:
    """A stack-wide transformation: every generated secret is protected (see the docstring)."""
    if args.type_ != RANDOM_PASSWORD:
        return None
    return pulumi.ResourceTransformationResult(
        args.props, pulumi.ResourceOptions.merge(args.opts, pulumi.ResourceOptions(protect=True))
    )


class Credentials(pulumi.ComponentResource):
    """Only hashes leave this component for the services; plaintext goes to secret outputs."""

    def __init__(
        self, name: str, args: CredentialsArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("comfy:workshop:Credentials", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.passwords: dict[str, pulumi.Output[str]] = {}
        hashes: dict[str, pulumi.Output[str]] = {}
        for user in args.usernames:
            if user in args.given_passwords:
                pw = args.given_passwords[user]
                self.passwords[user] = pulumi.Output.secret(pw)
                hashes[user] = pulumi.Output.secret(_argon2_hash(args.prefix, user, pw))
            else:
                rp = random.RandomPassword(f"password-{user}", length=16, special=False, opts=child)
                self.passwords[user] = pulumi.Output.secret(rp.result)
                hashes[user] = pulumi.Output.secret(rp.bcrypt_hash)
        if args.admin_password is not None:
            self.admin_password = pulumi.Output.secret(args.admin_password)
        else:
            self.admin_password = pulumi.Output.secret(
                random.RandomPassword("password-admin", length=24, special=False, opts=child).result
            )
        self.token_secret = pulumi.Output.secret(
            random.RandomPassword("queue-token-secret", length=64, special=False, opts=child).result
        )
        self.users_json = pulumi.Output.secret(
            pulumi.Output.all(*[hashes[u] for u in args.usernames]).apply(
                lambda hs: json.dumps(
                    {
                        u: {"password_hash": h, "role": "participant"}
                        for u, h in zip(args.usernames, hs, strict=True)
                    },
                    sort_keys=True,
                )
            )
        )
        self.register_outputs({})
