"""The containers on the VPS (Redis, queue, gateway, Caddy), declared on its Docker over SSH."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_command as command
import pulumi_docker as docker

from infra.backup import (
    EDGE_NETWORK,
    FILES_DIR_HOST,
    PRIVATE_NETWORK,
    Backup,
    BackupArgs,
    backup_env,
)
from infra.proxy import TLS_CERT, TLS_KEY, render_caddyfile
from infra.storage import S3Credentials
from services.contracts import GATEWAY_PORT, QUEUE_PORT

REPO_ROOT = Path(__file__).resolve().parent.parent
QUEUE_DOCKERFILE = "images/queue.Dockerfile"
REDIS_URL = "redis://redis:6379/0"
REDIS_CONF = """# Written by infra/control_plane.py; only the internal network reaches it.
appendonly yes
appendfsync everysec
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
    usernames: tuple[str, ...]
    queue_mode: str
    queue_image: str  # digest ref, or "" to build images/queue.Dockerfile on the VPS
    gateway_image: str  # digest ref, or "" (not deployed yet)
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
            "private", name=PRIVATE_NETWORK, internal=True, driver="bridge", opts=on_vps
        )
        self.edge = docker.Network("edge", name=EDGE_NETWORK, driver="bridge", opts=on_vps)

        redis_image = docker.RemoteImage(
            "redis-image", name=args.redis_image, keep_locally=True, opts=on_vps
        )
        caddy_image = docker.RemoteImage(
            "caddy-image", name=args.caddy_image, keep_locally=True, opts=on_vps
        )
        self.queue_image: pulumi.Output[str]
        queue_image_resource: pulumi.Resource
        if args.queue_image:
            pulled = docker.RemoteImage(
                "queue-image", name=args.queue_image, keep_locally=True, opts=on_vps
            )
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
            restart="unless-stopped",
            healthcheck=docker.ContainerHealthcheckArgs(
                tests=[
                    "CMD",
                    "python",
                    "-c",
                    "import urllib.request;"
                    "urllib.request.urlopen('http://127.0.0.1:8000/api/health', timeout=3)",
                ],
                interval="15s",
                timeout="5s",
                retries=5,
            ),
            opts=after(self.backup.step, self.redis, secret=True),
        )

        self.gateway: docker.Container | None = None
        proxy_deps: list[pulumi.Resource] = [self.queue]
        if args.gateway_image:
            gateway_image = docker.RemoteImage(
                "gateway-image", name=args.gateway_image, keep_locally=True, opts=on_vps
            )
            self.gateway = docker.Container(
                "gateway",
                name="gateway",
                image=gateway_image.image_id,
                envs=[
                    f"GATEWAY_QUEUE_URL=http://queue:{QUEUE_PORT}",
                    f"GATEWAY_USERS={json.dumps(list(args.usernames))}",
                    f"GATEWAY_PORT={GATEWAY_PORT}",
                ],
                networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=self.edge.name)],
                volumes=[
                    docker.ContainerVolumeArgs(
                        host_path=f"{FILES_DIR_HOST}/users", container_path="/data/users"
                    )
                ],
                restart="unless-stopped",
                opts=after(self.queue, self.backup.step),
            )
            proxy_deps.append(self.gateway)

        self.caddyfile = render_caddyfile(
            args.domain, args.usernames, gateway_deployed=bool(args.gateway_image)
        )
        self.proxy = docker.Container(
            "proxy",
            name="caddy",
            image=caddy_image.image_id,
            networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=self.edge.name)],
            ports=[
                docker.ContainerPortArgs(internal=80, external=80),
                docker.ContainerPortArgs(internal=443, external=443),
            ],
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
            restart="unless-stopped",
            opts=after(*proxy_deps),
        )
        self.register_outputs({"caddyfile": self.caddyfile})
