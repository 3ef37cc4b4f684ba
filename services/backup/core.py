"""Backup and restore: `<prefix><UTC timestamp>/...`, manifest last; restore the newest."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import redis

from services.backup.settings import BackupSettings
from services.backup.snapshot import dump_keys, restore_keys, to_jsonl

log = logging.getLogger("services.backup")
MANIFEST = "manifest.json"
REDIS_OBJECT = "redis.jsonl"
FILES_PREFIX = "files/"


@dataclass(frozen=True)
class BackupResult:
    """What a backup or restore did (None name: nothing to restore)."""

    name: str | None
    keys: int
    files: int


def s3_client(settings: BackupSettings) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint,
        aws_access_key_id=settings.access_key_id,
        aws_secret_access_key=settings.secret_access_key,
        region_name=settings.region if settings.region != "auto" else "us-east-1",
    )


def _timestamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def backup(settings: BackupSettings, *, s3: Any = None, name: str | None = None) -> BackupResult:
    """Snapshot every Redis key and every file, then write the manifest that makes it complete."""
    s3 = s3 or s3_client(settings)
    client = redis.Redis.from_url(settings.redis_url)
    name = name or _timestamp()
    base = f"{settings.prefix}{name}/"
    data, keys = to_jsonl(dump_keys(client))
    s3.put_object(Bucket=settings.bucket, Key=base + REDIS_OBJECT, Body=data)
    files: dict[str, dict[str, Any]] = {}
    root = settings.files_dir
    if root.is_dir():
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            rel = path.relative_to(root).as_posix()
            body = path.read_bytes()
            s3.put_object(Bucket=settings.bucket, Key=base + FILES_PREFIX + rel, Body=body)
            files[rel] = {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    manifest = {
        "version": 1,
        "created": name,
        "redis": {"object": REDIS_OBJECT, "keys": keys, "sha256": hashlib.sha256(data).hexdigest()},
        "files": files,
    }
    # Written last: a backup without a manifest is incomplete and never restored.
    s3.put_object(
        Bucket=settings.bucket, Key=base + MANIFEST, Body=json.dumps(manifest, indent=1).encode()
    )
    log.info("backup %s: %d keys, %d files", name, keys, len(files))
    return BackupResult(name=name, keys=keys, files=len(files))


def complete_backups(settings: BackupSettings, s3: Any) -> list[str]:
    """Names of backups that have a manifest, oldest first."""
    names: set[str] = set()
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=settings.bucket, Prefix=settings.prefix):
        for obj in page.get("Contents", []):
            rest = obj["Key"][len(settings.prefix) :]
            name, _, leaf = rest.partition("/")
            if leaf == MANIFEST:
                names.add(name)
    return sorted(names)


def _safe_target(root: Path, rel: str) -> Path:
    target = (root / rel).resolve()
    if root.resolve() not in target.parents:
        raise ValueError(f"refusing to restore {rel!r} outside {root}")
    return target


def restore(settings: BackupSettings, *, s3: Any = None) -> BackupResult:
    """Restore the newest complete backup; with none, do nothing and say so."""
    s3 = s3 or s3_client(settings)
    names = complete_backups(settings, s3)
    if not names:
        log.warning(
            "no complete backup under s3://%s/%s: nothing to restore",
            settings.bucket,
            settings.prefix,
        )
        return BackupResult(name=None, keys=0, files=0)
    name = names[-1]
    base = f"{settings.prefix}{name}/"
    manifest = json.loads(s3.get_object(Bucket=settings.bucket, Key=base + MANIFEST)["Body"].read())
    data = s3.get_object(Bucket=settings.bucket, Key=base + manifest["redis"]["object"])[
        "Body"
    ].read()
    if hashlib.sha256(data).hexdigest() != manifest["redis"]["sha256"]:
        raise ValueError(f"backup {name}: Redis snapshot does not match its manifest")
    keys = restore_keys(redis.Redis.from_url(settings.redis_url), data)
    root = settings.files_dir
    root.mkdir(parents=True, exist_ok=True)
    for rel, meta in manifest["files"].items():
        target = _safe_target(root, rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        body = s3.get_object(Bucket=settings.bucket, Key=base + FILES_PREFIX + rel)["Body"]
        tmp = target.with_name(target.name + ".restoring")
        with tmp.open("wb") as fh:
            shutil.copyfileobj(body, fh)
        if hashlib.sha256(tmp.read_bytes()).hexdigest() != meta["sha256"]:
            tmp.unlink()
            raise ValueError(f"backup {name}: file {rel} does not match its manifest")
        tmp.replace(target)
    log.info("restored %s: %d keys, %d files", name, keys, len(manifest["files"]))
    return BackupResult(name=name, keys=keys, files=len(manifest["files"]))
