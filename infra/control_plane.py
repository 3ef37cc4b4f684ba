"""The containers on the VPS (Redis, queue, gateway, Caddy), declared on its Docker over SSH.

Every Docker resource lives on one server: when the server is replaced the new one has
none of them, yet pulumi-docker only updates its provider's `host` in place and would call
the containers unchanged. So each Docker resource carries the server's id in an argument
its provider can only change by recreating it (a container's or network's label, a pulled
image's `triggers`, a built image's build args, which rebuild it): a new server means new
Docker resources on it. During the server's delete-before-replace the engine deletes those
dependents first, while the old server still answers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_command as command
import pulumi_docker as docker

from infra.backup import (
    EDGE_NETWORK,
    PRIVATE_NETWORK,
    Backup,
    BackupArgs,
    backup_env,
)
from infra.proxy import HTTPS_PORT, TLS_CERT, TLS_KEY, render_caddyfile
from infra.storage import S3Credentials
from services.contracts import GATEWAY_PORT, QUEUE_PORT, REDIS_APPENDFSYNC, REDIS_PORT

REPO_ROOT = Path(__file__).resolve().parent.parent
QUEUE_DOCKERFILE = "images/queue.Dockerfile"
REDIS_URL = f"redis://redis:{REDIS_PORT}/0"
#: The label (and build arg) that ties a Docker resource to the server it lives on.
SERVER_LABEL = "comfy.server"
SERVER_BUILD_ARG = "COMFY_SERVER_ID"
REDIS_CONF = f"""# Written by infra/control_plane.py; only the internal network reaches it.
appendonly yes
appendfsync {REDIS_APPENDFSYNC}
dir /data
protected-mode no
bind 0.0.0.0
"""


def queue_build_tag() -> str:
    """A content hash of what goes into the queue image, so the tag is never mutable."""
    h = hashlib.sha256()
    paths = [REPO_ROOT / QUEUE_DOCKERFILE, REPO_ROOT / "pyproject.toml", REPO_ROOT / "uv.lock"]
    # Everything the image COPYs (Lua scripts too), minus bytecode caches.
    paths += sorted(
        p
        for p in (REPO_ROOT / "services").rglob("*")
        if "__pycache__" not in p.parts and p.suffix != ".pyc"
    )
    for p in paths:
        if p.is_file():
            h.update(str(p.relative_to(REPO_ROOT)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class ControlPlaneArgs:
    """Images, secrets and the VPS facts the containers need."""

    domain: str
    queue_mode: str
    queue_image: str  # digest ref, or "" to build images/queue.Dockerfile on the VPS
    gateway_image: str  # digest ref, or "" to run the gateway from the queue image
    redis_image: str
    caddy_image: str
    platform: str  # linux/amd64 or linux/arm64, the VPS's architecture
    ssh_host: pulumi.Output[str]
    ssh_private_key_file: str
    connection: command.remote.ConnectionArgs
    ready: pulumi.Resource  # cloud-init finished
    server: pulumi.Resource
    tailnet_ip: pulumi.Output[str]
    origin_cert_pem: pulumi.Output[str]
    users_json: pulumi.Output[str]
    admin_password: pulumi.Output[str]
    token_secret: pulumi.Output[str]
    worker_tokens_json: pulumi.Output[str]
    r2_endpoint: str
    user_files_bucket: str
    r2: S3Credentials
    trusted_proxies: pulumi.Output[list[str]]  # Cloudflare's ranges


def gateway_env(*, domain: str, endpoint: str, bucket: str, key_id: str, secret: str) -> list[str]:
    """The gateway's settings (prefix GATEWAY_, see services/gateway): the queue on the edge
    network, the public URL, and the user-files bucket with the VPS's R2 credentials."""
    return [
        f"GATEWAY_QUEUE_URL=http://queue:{QUEUE_PORT}",
        f"GATEWAY_PORT={GATEWAY_PORT}",
        f"GATEWAY_PUBLIC_URL=https://{domain}",
        f"GATEWAY_STORAGE__BUCKET={bucket}",
        f"GATEWAY_STORAGE__ENDPOINT={endpoint}",
        f"GATEWAY_STORAGE__ACCESS_KEY_ID={key_id}",
        f"GATEWAY_STORAGE__SECRET_ACCESS_KEY={secret}",
        "GATEWAY_STORAGE__REGION=auto",
    ]


def python_healthcheck(code: str) -> docker.ContainerHealthcheckArgs:
    """A health check that runs `python -c code` in the container (the image has no curl)."""
    return docker.ContainerHealthcheckArgs(
        tests=["CMD", "python", "-c", code], interval="15s", timeout="5s", retries=5
    )


class ControlPlane(pulumi.ComponentResource):
    """Every container waits for cloud-init; the queue also waits for the restore."""

    def __init__(
        self, name: str, args: ControlPlaneArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("comfy:workshop:ControlPlane", name, None, opts)
        self.provider = docker.Provider(
            "vps-docker",
            host=args.ssh_host.apply(lambda h: f"ssh://deploy@{h}:22"),
            ssh_opts=[
                "-i",
                args.ssh_private_key_file,
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ],
            opts=pulumi.ResourceOptions(parent=self),
        )
        on_vps = pulumi.ResourceOptions(
            parent=self, provider=self.provider, depends_on=[args.ready]
        )
        server_id = args.server.id
        container_labels = [docker.ContainerLabelArgs(label=SERVER_LABEL, value=server_id)]
        network_labels = [docker.NetworkLabelArgs(label=SERVER_LABEL, value=server_id)]
        image_triggers = {"server": server_id}

        def after(*deps: pulumi.Resource, secret: bool = False) -> pulumi.ResourceOptions:
            return pulumi.ResourceOptions.merge(
                on_vps,
                pulumi.ResourceOptions(
                    depends_on=[args.ready, *deps],
                    additional_secret_outputs=["envs", "uploads"] if secret else None,
                ),
            )

        # Redis lives only here: no internet, no published port, and only the queue
        # (and the backup runner) join it. Gateway and Caddy face participants and
        # stay on the edge network, so a compromised one still cannot reach Redis.
        self.private = docker.Network(
            "private",
            name=PRIVATE_NETWORK,
            internal=True,
            driver="bridge",
            labels=network_labels,
            opts=on_vps,
        )
        self.edge = docker.Network(
            "edge", name=EDGE_NETWORK, driver="bridge", labels=network_labels, opts=on_vps
        )

        def pull(name: str, ref: str) -> docker.RemoteImage:
            return docker.RemoteImage(
                name, name=ref, keep_locally=True, triggers=image_triggers, opts=on_vps
            )

        redis_image = pull("redis-image", args.redis_image)
        caddy_image = pull("caddy-image", args.caddy_image)
        self.queue_image: pulumi.Output[str]
        queue_image_resource: pulumi.Resource
        if args.queue_image:
            pulled = pull("queue-image", args.queue_image)
            self.queue_image = pulled.image_id
            queue_image_resource = pulled
        else:
            built = docker.Image(
                "queue-image",
                image_name=f"comfy-workshop/queue:{queue_build_tag()}",
                build=docker.DockerBuildArgs(
                    context=str(REPO_ROOT),
                    dockerfile=str(REPO_ROOT / QUEUE_DOCKERFILE),
                    platform=args.platform,
                    # Not used by the Dockerfile: it makes a new server a rebuild.
                    args={SERVER_BUILD_ARG: server_id},
                ),
                skip_push=True,
                opts=on_vps,
            )
            self.queue_image = built.image_name
            queue_image_resource = built

        self.redis = docker.Container(
            "redis",
            name="redis",
            image=redis_image.image_id,
            command=["redis-server", "/usr/local/etc/redis/redis.conf"],
            uploads=[
                docker.ContainerUploadArgs(
                    file="/usr/local/etc/redis/redis.conf", content=REDIS_CONF
                )
            ],
            networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=self.private.name)],
            volumes=[
                docker.ContainerVolumeArgs(host_path="/mnt/data/redis", container_path="/data")
            ],
            labels=container_labels,
            restart="unless-stopped",
            healthcheck=docker.ContainerHealthcheckArgs(
                tests=["CMD", "redis-cli", "ping"], interval="10s", timeout="3s", retries=5
            ),
            wait=True,
            opts=after(self.private),
        )

        env = pulumi.Output.all(args.r2.access_key_id, args.r2.secret_access_key).apply(
            lambda c: backup_env(
                endpoint=args.r2_endpoint,
                bucket=args.user_files_bucket,
                key_id=c[0],
                secret=c[1],
                redis_url=REDIS_URL,
            )
        )
        self.backup = Backup(
            "backup",
            BackupArgs(
                connection=args.connection,
                image=self.queue_image,
                env=env,
                server_id=args.server.id,
                depends_on=[
                    args.server,
                    args.ready,
                    self.private,
                    self.edge,
                    self.redis,
                    queue_image_resource,
                    args.r2.token,
                ],
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )

        queue_env = pulumi.Output.secret(
            pulumi.Output.all(
                args.token_secret,
                args.admin_password,
                args.users_json,
                args.worker_tokens_json,
            ).apply(
                lambda v: [
                    f"QUEUE_REDIS_URL={REDIS_URL}",
                    f"QUEUE_TOKEN_SECRET={v[0]}",
                    f"QUEUE_ADMIN_PASSWORD={v[1]}",
                    f"QUEUE_USERS={v[2]}",
                    f"QUEUE_WORKER_TOKENS={v[3]}",
                    f"QUEUE_MODE={args.queue_mode}",
                    f"QUEUE_PUBLIC_URL=https://{args.domain}",
                ]
            )
        )
        self.queue = docker.Container(
            "queue",
            name="queue",
            image=self.queue_image,
            envs=queue_env,
            networks_advanced=[
                docker.ContainerNetworksAdvancedArgs(name=self.private.name),
                docker.ContainerNetworksAdvancedArgs(name=self.edge.name),
            ],
            # Workers reach the queue on the tailnet address only; the public firewall
            # does not open 8000 either.
            ports=[
                docker.ContainerPortArgs(
                    internal=QUEUE_PORT, external=QUEUE_PORT, ip=args.tailnet_ip
                )
            ],
            labels=container_labels,
            restart="unless-stopped",
            healthcheck=python_healthcheck(
                "import urllib.request;"
                f"urllib.request.urlopen('http://127.0.0.1:{QUEUE_PORT}/api/health', timeout=3)"
            ),
            opts=after(self.backup.step, self.redis, secret=True),
        )

        # The participant gateway: the queue's image with another command (or its own image
        # when `gatewayImage` is set). Edge network only: it reaches the queue's API, never
        # Redis, and object storage only through the VPS's R2 credentials.
        gateway_image = (
            pull("gateway-image", args.gateway_image).image_id
            if args.gateway_image
            else self.queue_image
        )
        self.gateway = docker.Container(
            "gateway",
            name="gateway",
            image=gateway_image,
            command=["python", "-m", "services.gateway"],
            envs=pulumi.Output.secret(
                pulumi.Output.all(args.r2.access_key_id, args.r2.secret_access_key).apply(
                    lambda c: gateway_env(
                        domain=args.domain,
                        endpoint=args.r2_endpoint,
                        bucket=args.user_files_bucket,
                        key_id=c[0],
                        secret=c[1],
                    )
                )
            ),
            networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=self.edge.name)],
            labels=container_labels,
            restart="unless-stopped",
            # The image's own HEALTHCHECK is the queue's (port 8000); check the gateway's port.
            healthcheck=python_healthcheck(
                f"import socket; socket.create_connection(('127.0.0.1', {GATEWAY_PORT}), 3)"
            ),
            opts=after(self.queue, secret=True),
        )

        self.caddyfile = args.trusted_proxies.apply(
            lambda ranges: render_caddyfile(args.domain, ranges)
        )
        self.proxy = docker.Container(
            "proxy",
            name="caddy",
            image=caddy_image.image_id,
            networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=self.edge.name)],
            # 443 only: Cloudflare reaches the origin over HTTPS and nothing else may.
            ports=[docker.ContainerPortArgs(internal=HTTPS_PORT, external=HTTPS_PORT)],
            uploads=[
                docker.ContainerUploadArgs(file="/etc/caddy/Caddyfile", content=self.caddyfile),
                docker.ContainerUploadArgs(file=TLS_CERT, content=args.origin_cert_pem),
            ],
            volumes=[
                docker.ContainerVolumeArgs(
                    host_path="/srv/comfy/tls/origin.key", container_path=TLS_KEY, read_only=True
                ),
                docker.ContainerVolumeArgs(host_path="/mnt/data/caddy", container_path="/data"),
            ],
            labels=container_labels,
            restart="unless-stopped",
            opts=after(self.queue, self.gateway),
        )
        self.register_outputs({"caddyfile": self.caddyfile})
