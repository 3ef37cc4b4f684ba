"""The daily cycle on the VPS: restore on `pulumi up`, back up on `pulumi destroy`.

One remote command does both: its create restores the newest complete backup into
Redis (which is already running) before the queue starts; its delete writes a backup.
The queue depends on it and it depends on Redis and the server, so on destroy Pulumi
stops the queue, then runs the backup, then removes Redis, then the server.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

import pulumi
import pulumi_command as command

ENV_FILE = "/srv/comfy/backup.env"
FILES_DIR_HOST = "/mnt/data/files"
FILES_DIR_CONTAINER = "/data/files"
PRIVATE_NETWORK = "comfy-private"


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
    """The shell that runs `python -m services.backup <action>` in the queue image."""
    return (
        "set -eu\n"
        f"docker run --rm --network {PRIVATE_NETWORK} --env-file {ENV_FILE} "
        f"-v {FILES_DIR_HOST}:{FILES_DIR_CONTAINER} {shlex.quote(image)} "
        f"python -m services.backup {action}\n"
    )


def restore_script(image: str) -> str:
    """Save the env from stdin (mode 600) for the later backup, then restore."""
    return f"set -eu\numask 077\ncat > {ENV_FILE}\n" + run_cli(image, "restore")


@dataclass(frozen=True)
class BackupArgs:
    """Where to run, with what image, and what must exist first."""

    connection: command.remote.ConnectionArgs
    image: pulumi.Output[str]
    env: pulumi.Output[str]
    depends_on: list[pulumi.Resource]


class Backup(pulumi.ComponentResource):
    """Restore-on-create, backup-on-delete; `step` is what the queue must depend on."""

    def __init__(self, name: str, args: BackupArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("comfy:workshop:Backup", name, None, opts)
        self.step = command.remote.Command(
            "restore-then-backup",
            connection=args.connection,
            create=args.image.apply(restore_script),
            delete=args.image.apply(lambda i: run_cli(i, "backup")),
            stdin=pulumi.Output.secret(args.env),
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=args.depends_on,
                # On a replacement, back up with the old one before restoring with the new.
                delete_before_replace=True,
                additional_secret_outputs=["stdin"],
            ),
        )
        self.register_outputs({})
