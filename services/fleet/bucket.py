"""Fill the `models` bucket from the manifest's sources, and verify what it holds.

Each model is streamed from its source URL straight into the bucket (multipart, never the whole
file in memory or on disk), hashed on the way; an object whose bytes are not the manifest's is
deleted again, so the bucket only ever holds verified files. The object's metadata records the
sha256, so a later run (and `verify`) knows a file is right without downloading it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, TextIO

import httpx
from boto3.s3.transfer import TransferConfig

from services.fleet.fetch import ChecksumMismatch, FetchError
from services.fleet.manifest import Manifest, Model
from services.fleet.progress import Progress

SHA_META = "sha256"
#: Multipart parts of 64 MiB keep a 24 GB file well under S3's 10,000-part limit.
TRANSFER = TransferConfig(multipart_chunksize=64 * 1024 * 1024, max_concurrency=4)


@dataclass(frozen=True)
class Stored:
    key: str
    how: str  # "present" | "uploaded"


@dataclass(frozen=True)
class BucketProblem:
    key: str
    message: str


class _HashingReader:
    """A file-like view of an HTTP body that hashes and counts what passes through."""

    def __init__(self, chunks: Any, progress: Progress) -> None:
        self._chunks = chunks
        self._buffer = b""
        self.digest = hashlib.sha256()
        self.size = 0
        self.progress = progress

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buffer) < n:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                break
            self.digest.update(chunk)
            self.size += len(chunk)
            self.progress.advance(len(chunk))
            self._buffer += chunk
        if n < 0:
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data


def _head(client: Any, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        return client.head_object(Bucket=bucket, Key=key)  # type: ignore[no-any-return]
    except client.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def _in_place(head: dict[str, Any] | None, model: Model) -> bool:
    return (
        head is not None
        and int(head["ContentLength"]) == model.size
        and head.get("Metadata", {}).get(SHA_META) == model.sha256
    )


def _upload(
    client: Any,
    bucket: str,
    model: Model,
    http: httpx.Client,
    token: str | None,
    out: TextIO | None,
) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    progress = Progress(f"upload {model.key}", model.size, out)
    with http.stream("GET", model.url, headers=headers, follow_redirects=True) as response:
        if response.status_code in (401, 403):
            hint = (
                "accept the model's licence on its page and set HF_TOKEN"
                if model.gated
                else "check the URL"
            )
            raise FetchError(f"{model.key}: {model.url} answered {response.status_code}; {hint}")
        if response.status_code != 200:
            raise FetchError(f"{model.key}: {model.url} answered {response.status_code}")
        reader = _HashingReader(response.iter_bytes(8 * 1024 * 1024), progress)
        client.upload_fileobj(
            reader,
            bucket,
            model.key,
            ExtraArgs={"Metadata": {SHA_META: model.sha256}},
            Config=TRANSFER,
        )
    progress.done()
    digest = reader.digest.hexdigest()
    if reader.size != model.size or digest != model.sha256:
        client.delete_object(Bucket=bucket, Key=model.key)
        raise ChecksumMismatch(
            f"{model.key}: {model.url} gave {reader.size} bytes with sha256 {digest}, the "
            f"manifest says {model.size} bytes, {model.sha256}; refused and removed from the bucket"
        )


def fill_bucket(
    manifest: Manifest,
    client: Any,
    bucket: str,
    *,
    http: httpx.Client,
    token: str | None = None,
    out: TextIO | None = None,
) -> list[Stored]:
    """Upload each model the bucket lacks (or holds in another version); skip verified ones."""
    stored = []
    for model in manifest.models:
        if _in_place(_head(client, bucket, model.key), model):
            stored.append(Stored(model.key, "present"))
            continue
        _upload(client, bucket, model, http, token, out)
        stored.append(Stored(model.key, "uploaded"))
    return stored


def verify_bucket(
    manifest: Manifest, client: Any, bucket: str, *, deep: bool = False, out: TextIO | None = None
) -> list[BucketProblem]:
    """What is missing or wrong in the bucket; `deep` re-reads and hashes every object."""
    problems = []
    for model in manifest.models:
        head = _head(client, bucket, model.key)
        if head is None:
            problems.append(BucketProblem(model.key, "missing"))
            continue
        if not _in_place(head, model):
            problems.append(
                BucketProblem(
                    model.key,
                    f"{head['ContentLength']} bytes, sha256 "
                    f"{head.get('Metadata', {}).get(SHA_META, 'unknown')}: not the manifest's file",
                )
            )
            continue
        if deep:
            digest = hashlib.sha256()
            progress = Progress(f"hash {model.key}", model.size, out)
            body = client.get_object(Bucket=bucket, Key=model.key)["Body"]
            for chunk in body.iter_chunks(8 * 1024 * 1024):
                digest.update(chunk)
                progress.advance(len(chunk))
            progress.done()
            if digest.hexdigest() != model.sha256:
                problems.append(BucketProblem(model.key, f"content sha256 {digest.hexdigest()}"))
    return problems
