"""Backup/restore for real: a real Redis, S3 through moto's server over HTTP, real files."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from services.backup.core import MANIFEST, backup, complete_backups, restore
from services.backup.settings import BackupSettings

BUCKET = "workshop-user-files"


def backup_env(redis_url: str, endpoint: str, files: Path) -> dict[str, str]:
    """The environment the backup container gets on the VPS, pointed at the test's servers."""
    return {
        "BACKUP_REDIS_URL": redis_url,
        "BACKUP_S3_ENDPOINT": endpoint,
        "BACKUP_S3_BUCKET": BUCKET,
        "BACKUP_S3_ACCESS_KEY_ID": "test",
        "BACKUP_S3_SECRET_ACCESS_KEY": "test",
        "BACKUP_S3_REGION": "us-east-1",
        "BACKUP_FILES_DIR": str(files),
    }


def settings(redis_url: str, endpoint: str, files: Path) -> BackupSettings:
    return BackupSettings.from_env(backup_env(redis_url, endpoint, files))


def seed(r, files: Path) -> dict:
    """Jobs, history, a stream, a set, expiring session, binary value; and user files."""
    r.hset("job:1", mapping={"user": "user001", "status": "done", "prompt": "{}"})
    r.hset("job:2", mapping={"user": "user002", "status": "queued"})
    r.rpush("history:user001", "job:1", "job:0")
    r.zadd("queue:fair", {"job:2": 1.5})
    r.sadd("workers", "gpu-01")
    r.xadd("events", {"type": "done", "job": "1"})
    r.set("session:abc", "user001", px=3_600_000)
    r.set(b"bin:\x00\xff", b"\x00\x01\xfe\xff")
    (files / "user001" / "workflows").mkdir(parents=True)
    (files / "user001" / "workflows" / "flow.json").write_text('{"nodes": []}')
    (files / "user002" / "output").mkdir(parents=True)
    (files / "user002" / "output" / "img.png").write_bytes(bytes(range(256)) * 100)
    return {k: (r.type(k), r.dump(k)) for k in r.keys("*")}


def file_map(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_backup_wipe_restore_round_trip(infra_redis, s3_server, tmp_path):
    endpoint, _ = s3_server
    files = tmp_path / "files"
    r = infra_redis.client
    before = seed(r, files)
    files_before = file_map(files)
    cfg = settings(infra_redis.url, endpoint, files)

    made = backup(cfg)
    assert made.keys == len(before) == 8
    assert made.files == 2

    r.flushall()
    shutil.rmtree(files)
    assert r.dbsize() == 0

    got = restore(cfg)
    assert got.name == made.name
    assert {k: (r.type(k), r.dump(k)) for k in r.keys("*")} == before
    assert 3_500_000 < r.pttl("session:abc") <= 3_600_000
    assert r.pttl("job:1") == -1
    assert r.lrange("history:user001", 0, -1) == [b"job:1", b"job:0"]
    assert file_map(files) == files_before


def test_incomplete_backup_is_ignored(infra_redis, s3_server, tmp_path):
    endpoint, s3 = s3_server
    files = tmp_path / "files"
    files.mkdir()
    r = infra_redis.client
    cfg = settings(infra_redis.url, endpoint, files)
    r.set("generation", "old")
    good = backup(cfg, name="20250101T080000000000Z")
    r.set("generation", "half-written")
    backup(cfg, name="20250101T180000000000Z")
    # Simulate the VPS dying mid-backup: the newer backup lost its manifest.
    s3.delete_object(Bucket=BUCKET, Key=f"backups/20250101T180000000000Z/{MANIFEST}")
    assert complete_backups(cfg, s3) == [good.name]
    r.flushall()
    assert restore(cfg).name == good.name
    assert r.get("generation") == b"old"


def test_restore_without_backup_is_a_clean_no_op(infra_redis, s3_server, tmp_path):
    endpoint, _ = s3_server
    infra_redis.client.set("keep", "me")
    result = restore(settings(infra_redis.url, endpoint, tmp_path / "files"))
    assert result.name is None
    assert infra_redis.client.get("keep") == b"me"


def test_cli_runs_backup_and_restore(infra_redis, s3_server, tmp_path):
    """The exact entry point the VPS runs: `python -m services.backup backup|restore`."""
    endpoint, _ = s3_server
    files = tmp_path / "files"
    files.mkdir()
    (files / "upload.txt").write_text("hello")
    infra_redis.client.set("job:9", "done")
    env = {"PATH": "/usr/bin:/bin", **backup_env(infra_redis.url, endpoint, files)}
    root = Path(__file__).resolve().parents[2]
    run = [sys.executable, "-m", "services.backup"]
    empty = subprocess.run([*run, "restore"], env=env, cwd=root, capture_output=True, text=True)
    assert empty.returncode == 0, empty.stderr
    assert "nothing to restore" in empty.stdout
    done = subprocess.run([*run, "backup"], env=env, cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    infra_redis.client.flushall()
    shutil.rmtree(files)
    back = subprocess.run([*run, "restore"], env=env, cwd=root, capture_output=True, text=True)
    assert back.returncode == 0, back.stderr
    assert infra_redis.client.get("job:9") == b"done"
    assert (files / "upload.txt").read_text() == "hello"
    missing = subprocess.run(
        [*run, "backup"], env={"PATH": "/usr/bin"}, cwd=root, capture_output=True, text=True
    )
    assert missing.returncode == 2
    assert "BACKUP_REDIS_URL" in missing.stderr
