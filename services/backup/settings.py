"""Backup settings from the environment (BACKUP_*), checked before anything is touched."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


class SettingsError(ValueError):
    """A required BACKUP_* variable is missing."""


@dataclass(frozen=True)
class BackupSettings:
    """Where Redis is, which bucket/prefix holds backups, and which files dir to include."""

    redis_url: str
    s3_endpoint: str | None
    bucket: str
    prefix: str
    access_key_id: str | None
    secret_access_key: str | None
    region: str
    files_dir: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BackupSettings:
        env = os.environ if env is None else env
        missing = [k for k in ("BACKUP_REDIS_URL", "BACKUP_S3_BUCKET") if not env.get(k)]
        if missing:
            raise SettingsError(f"missing environment variable(s): {', '.join(missing)}")
        prefix = env.get("BACKUP_S3_PREFIX", "backups/")
        return cls(
            redis_url=env["BACKUP_REDIS_URL"],
            s3_endpoint=env.get("BACKUP_S3_ENDPOINT") or None,
            bucket=env["BACKUP_S3_BUCKET"],
            prefix=prefix if prefix.endswith("/") else prefix + "/",
            access_key_id=env.get("BACKUP_S3_ACCESS_KEY_ID") or None,
            secret_access_key=env.get("BACKUP_S3_SECRET_ACCESS_KEY") or None,
            region=env.get("BACKUP_S3_REGION", "auto"),
            files_dir=Path(env.get("BACKUP_FILES_DIR", "/data/files")),
        )
