"""Extension point for GPU hosts (their own issue): "Verda first, any SSH-reachable host second".

Today this component only mints the worker tokens the queue must know and records
the idle limit every host must carry; the GPU issue adds one `GpuHost` child per
host here, joined with the tailnet's ephemeral GPU key and reading R2 with the GPU
credentials. The policy pack already requires an idle limit on every GPU host.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_random as random

from infra.config import GpuSettings
from infra.storage import S3Credentials
from services.contracts import WORKER_TOKEN_PREFIX


@dataclass(frozen=True)
class GpuHostsArgs:
    """What a GPU host will need: settings, tailnet key, R2 credentials, queue address."""

    settings: GpuSettings
    tailscale_auth_key: pulumi.Output[str]
    r2: S3Credentials
    queue_url: pulumi.Output[str]


class GpuHosts(pulumi.ComponentResource):
    """No hosts yet; `worker_tokens_json` is what the queue's QUEUE_WORKER_TOKENS gets."""

    def __init__(self, name: str, args: GpuHostsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("comfy:workshop:GpuHosts", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.names = [f"gpu-{i:02d}" for i in range(1, args.settings.count + 1)]
        # The queue tells worker tokens from participant JWTs by this prefix
        # (services/queue/auth.py): a token without it is never accepted.
        self.worker_tokens: dict[str, pulumi.Output[str]] = {
            n: pulumi.Output.secret(
                random.RandomPassword(
                    f"worker-token-{n}", length=48, special=False, opts=child
                ).result.apply(lambda t: WORKER_TOKEN_PREFIX + t)
            )
            for n in self.names
        }
        self.worker_tokens_json = pulumi.Output.secret(
            pulumi.Output.all(**self.worker_tokens).apply(
                lambda ts: json.dumps(dict(ts), sort_keys=True)
            )
        )
        self.idle_minutes = args.settings.idle_minutes
        self.register_outputs({"hosts": self.names})
