"""Object storage for participants' files: R2 (any S3 API, through boto3) or a local directory.

The worker stores outputs, the gateway serves them and stores uploads and saved workflows;
both speak this one small async interface and never build keys themselves (the key layout is
`services.contracts`). boto3 is synchronous, so every S3 call runs in a worker thread and the
event loop never blocks on the network or the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, SecretStr, model_validator

from services.contracts import safe_relpath

#: Files are read and sent in pieces of this size (a video output can be hundreds of MB).
CHUNK_BYTES = 1024 * 1024


class ObjectNotFound(KeyError):
    """No object under that key."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: float  # Unix seconds
    content_type: str | None = None


class ObjectStore(Protocol):
    """What the services need of object storage; keys come from `services.contracts`."""

    async def put(self, key: str, data: bytes, content_type: str | None = None) -> None: ...

    async def put_file(self, key: str, path: Path, content_type: str | None = None) -> None: ...

    async def get(self, key: str) -> bytes: ...

    def stream(self, key: str) -> AsyncIterator[bytes]: ...

    async def stat(self, key: str) -> ObjectInfo | None: ...

    async def list(self, prefix: str) -> list[ObjectInfo]: ...

    async def delete(self, key: str) -> None: ...

    async def copy(self, source: str, target: str) -> None: ...


def _check_key(key: str) -> str:
    return safe_relpath(key, "object key")


class DirStore:
    """A local directory (local mode, tests): the key is the relative path. Writes go to a
    temporary file first and are renamed into place, so a reader never sees half a file."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def _write(self, key: str, data: bytes | None, source: Path | None) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                if data is not None:
                    out.write(data)
                else:
                    assert source is not None
                    with source.open("rb") as src:
                        while chunk := src.read(CHUNK_BYTES):
                            out.write(chunk)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    async def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        await asyncio.to_thread(self._write, key, data, None)

    async def put_file(self, key: str, path: Path, content_type: str | None = None) -> None:
        await asyncio.to_thread(self._write, key, None, path)

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectNotFound(key) from exc

    async def stream(self, key: str) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            handle = await asyncio.to_thread(path.open, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectNotFound(key) from exc
        try:
            while chunk := await asyncio.to_thread(handle.read, CHUNK_BYTES):
                yield chunk
        finally:
            handle.close()

    def _stat(self, key: str) -> ObjectInfo | None:
        try:
            st = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not os.path.isfile(self._path(key)):
            return None
        return ObjectInfo(key=key, size=st.st_size, modified=st.st_mtime)

    async def stat(self, key: str) -> ObjectInfo | None:
        return await asyncio.to_thread(self._stat, key)

    def _list(self, prefix: str) -> list[ObjectInfo]:
        # The prefix may end inside a name ("users/u/input/ph"): walk its directory.
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base.is_dir():
            return []
        found = []
        for path in base.rglob("*"):
            if not path.is_file() or path.name.startswith(".upload-"):
                continue
            key = path.relative_to(self.root).as_posix()
            if key.startswith(prefix):
                st = path.stat()
                found.append(ObjectInfo(key=key, size=st.st_size, modified=st.st_mtime))
        return sorted(found, key=lambda o: o.key)

    async def list(self, prefix: str) -> list[ObjectInfo]:
        return await asyncio.to_thread(self._list, prefix)

    async def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(self._path(key).unlink)

    async def copy(self, source: str, target: str) -> None:
        src = self._path(source)
        if not await asyncio.to_thread(src.is_file):
            raise ObjectNotFound(source)
        await asyncio.to_thread(self._write, target, None, src)


class S3Store:
    """A bucket on an S3 API (Cloudflare R2 in the cloud, moto in the tests), through boto3."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    async def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else {}
        await asyncio.to_thread(
            self.client.put_object, Bucket=self.bucket, Key=_check_key(key), Body=data, **extra
        )

    async def put_file(self, key: str, path: Path, content_type: str | None = None) -> None:
        # upload_file switches to multipart for large files by itself.
        extra = {"ExtraArgs": {"ContentType": content_type}} if content_type else {}
        await asyncio.to_thread(
            self.client.upload_file, str(path), self.bucket, _check_key(key), **extra
        )

    def _get_object(self, key: str) -> dict[str, Any]:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=_check_key(key))  # type: ignore[no-any-return]
        except self.client.exceptions.NoSuchKey as exc:
            raise ObjectNotFound(key) from exc

    async def get(self, key: str) -> bytes:
        response = await asyncio.to_thread(self._get_object, key)
        return await asyncio.to_thread(response["Body"].read)  # type: ignore[no-any-return]

    async def stream(self, key: str) -> AsyncIterator[bytes]:
        response = await asyncio.to_thread(self._get_object, key)
        body = response["Body"]
        try:
            while chunk := await asyncio.to_thread(body.read, CHUNK_BYTES):
                yield chunk
        finally:
            body.close()

    def _head(self, key: str) -> ObjectInfo | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=_check_key(key))
        except self.client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return ObjectInfo(
            key=key,
            size=int(head["ContentLength"]),
            modified=head["LastModified"].timestamp(),
            content_type=head.get("ContentType"),
        )

    async def stat(self, key: str) -> ObjectInfo | None:
        return await asyncio.to_thread(self._head, key)

    def _list(self, prefix: str) -> list[ObjectInfo]:
        found = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                found.append(
                    ObjectInfo(
                        key=obj["Key"],
                        size=int(obj["Size"]),
                        modified=obj["LastModified"].timestamp(),
                    )
                )
        return found

    async def list(self, prefix: str) -> list[ObjectInfo]:
        return await asyncio.to_thread(self._list, prefix)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.client.delete_object, Bucket=self.bucket, Key=_check_key(key))

    async def copy(self, source: str, target: str) -> None:
        def _copy() -> None:
            try:
                self.client.copy_object(
                    Bucket=self.bucket,
                    Key=_check_key(target),
                    CopySource={"Bucket": self.bucket, "Key": _check_key(source)},
                )
            except self.client.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                    raise ObjectNotFound(source) from exc
                raise

        await asyncio.to_thread(_copy)


class StorageSettings(BaseModel):
    """Where files live: `dir` (a local directory) or an S3 bucket (R2: endpoint
    `https://<account>.r2.cloudflarestorage.com`, region `auto`). Nested in each service's
    settings, e.g. ``WORKER_STORAGE__BUCKET``."""

    dir: Path | None = None
    bucket: str | None = None
    endpoint: str | None = None
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    region: str = "auto"

    @model_validator(mode="after")
    def _one_backend(self) -> StorageSettings:
        if (self.dir is None) == (self.bucket is None):
            raise ValueError(
                "set exactly one of storage.dir (a local directory) or storage.bucket "
                "(an S3/R2 bucket, with storage.endpoint and its keys)"
            )
        return self


def open_store(settings: StorageSettings) -> ObjectStore:
    """The store the settings describe."""
    if settings.dir is not None:
        return DirStore(settings.dir)
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=settings.endpoint,
        aws_access_key_id=settings.access_key_id,
        aws_secret_access_key=(
            settings.secret_access_key.get_secret_value() if settings.secret_access_key else None
        ),
        # R2 wants "auto"; botocore needs a real-looking region name to sign.
        region_name="us-east-1" if settings.region == "auto" else settings.region,
        config=Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=32),
    )
    assert settings.bucket is not None
    return S3Store(client, settings.bucket)
