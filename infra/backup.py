"""The daily cycle on the VPS: restore on `pulumi up`, back up on `pulumi destroy`.

One remote command does both: its create restores the newest complete backup into
Redis (which is already running) before the queue starts; its delete writes a backup.
The queue depends on it and it depends on Redis, the server and the R2 token, so on
destroy Pulumi stops the queue, then runs the backup, then removes Redis, the token
and the server. An ordinary update (new image, rotated credentials) only refreshes
the saved env file: restoring over a live Redis would roll the day back.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

import pulumi
import pulumi_command as command

ENV_FILE = "/srv/comfy/backup.env"
FILES_DIR_HOST = "/mnt/data/files"
FILES_DIR_CONTAINER = "/data/files"
PRIVATE_NETWORK = "comfy-private"  # internal: Redis only, no route to the internet
EDGE_NETWORK = "comfy-edge"  # has egress: the runner reaches R2 through it


def backup_env(*, endpoint: str, bucket: str, key_id: str, secret: str, redis_url: str) -> str:
    """The env file the backup/restore container reads (see services/backup/settings.py)."""
    lines = {
        "BACKUP_REDIS_URL": redis_url,
        "BACKUP_S3_ENDPOINT": endpoint,
        "BACKUP_S3_BUCKET": bucket,
        "BACKUP_S3_PREFIX": "backups/",
        "BACKUP_S3_ACCESS_KEY_ID": key_id,
        "BACKUP_S3_SECRET_ACCESS_KEY": secret,
        "BACKUP_S3_REGION": "auto",
        "BACKUP_FILES_DIR": FILES_DIR_CONTAINER,
    }
    return "".join(f"{k}={v}\n" for k, v in lines.items())


def run_cli(image: str, action: str) -> str:
    """The shell that runs `python -m services.backup <action>` in the queue image.

    The runner needs Redis (internal network) and R2 (internet), and `docker run`
    takes one network, so: create on the private one, connect the edge one, start.
    """
    return (
        "set -eu\n"
        f"cid=$(docker create --network {PRIVATE_NETWORK} --env-file {ENV_FILE} "
        f"-v {FILES_DIR_HOST}:{FILES_DIR_CONTAINER} {shlex.quote(image)} "
        f"python -m services.backup {action})\n"
        "trap 'docker rm -f \"$cid\" >/dev/null' EXIT\n"
        f'docker network connect {EDGE_NETWORK} "$cid"\n'
        'docker start --attach "$cid"\n'
    )


def save_env_script() -> str:
    """Save the env from stdin (mode 600) for the later backup; no restore."""
    return f"set -eu\numask 077\ncat > {ENV_FILE}\n"


def restore_script(image: str) -> str:
    """Save the env, then restore (only ever on create: an empty Redis on a new server)."""
    return save_env_script() + run_cli(image, "restore")


@dataclass(frozen=True)
class BackupArgs:
    """Where to run, with what image, and what must exist first."""

    connection: command.remote.ConnectionArgs
    image: pulumi.Output[str]
    env: pulumi.Output[str]
    server_id: pulumi.Output[str]
    depends_on: list[pulumi.Resource]


class Backup(pulumi.ComponentResource):
    """Restore-on-create, backup-on-delete; `step` is what the queue must depend on."""

    def __init__(self, name: str, args: BackupArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("comfy:workshop:Backup", name, None, opts)
        self.step = command.remote.Command(
            "restore-then-backup",
            connection=args.connection,
            create=args.image.apply(restore_script),
            update=save_env_script(),
            delete=args.image.apply(lambda i: run_cli(i, "backup")),
            stdin=pulumi.Output.secret(args.env),
            # A new server has an empty Redis: back up the old one, restore on the new.
            triggers=[args.server_id],
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=args.depends_on,
                replace_on_changes=["triggers"],
                # On a replacement, back up with the old one before restoring with the new.
                delete_before_replace=True,
                additional_secret_outputs=["stdin"],
            ),
        )
        self.register_outputs({})
