"""Put every manifest model onto this host, where ComfyUI will look: `<dest>/<folder>/<file>`.

From a provider-local shared volume when one is configured and holds the file, else from the
`models` bucket in parallel byte ranges. Resumable: finished ranges are journalled, so an
interrupted fetch (a reboot, a lost connection) continues where it stopped. Checksum-verified:
a file whose sha256 is not the manifest's is refused and removed, never renamed into place.
A verified file gets a stamp (size, mtime, sha256), so the next boot does not hash it again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO

from services.fleet.manifest import Manifest, Model
from services.fleet.progress import Progress

PART_BYTES = 64 * 1024 * 1024
READ_BYTES = 1024 * 1024
STATE_DIR = ".fleet"  # under dest: journals, partial files and stamps (not model extensions)


class FetchError(RuntimeError):
    """A model could not be fetched; the message says which and why."""


class ChecksumMismatch(FetchError):
    """The bytes fetched are not the manifest's file: refused."""


class RangeSource(Protocol):
    def size(self, key: str) -> int | None: ...

    def read(self, key: str, start: int, end: int) -> Iterator[bytes]: ...


class BucketSource:
    """Byte ranges of objects in the models bucket (S3 API: R2, or moto in the tests)."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    def size(self, key: str) -> int | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except self.client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return int(head["ContentLength"])

    def read(self, key: str, start: int, end: int) -> Iterator[bytes]:
        """Bytes [start, end) of the object."""
        response = self.client.get_object(
            Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end - 1}"
        )
        body = response["Body"]
        try:
            yield from body.iter_chunks(READ_BYTES)
        finally:
            body.close()


@dataclass(frozen=True)
class Fetched:
    key: str
    how: str  # "present" | "shared" | "bucket"
    bytes_copied: int


def sha256_file(path: Path, progress: Progress | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(READ_BYTES):
            digest.update(chunk)
            if progress:
                progress.advance(len(chunk))
    return digest.hexdigest()


class _Paths:
    def __init__(self, dest: Path, model: Model) -> None:
        state = dest / STATE_DIR / model.folder
        self.target = dest / model.folder / model.file
        self.part = state / (model.file + ".part")
        self.journal = state / (model.file + ".part.json")
        self.stamp = state / (model.file + ".verified")

    def clear_partial(self) -> None:
        for path in (self.part, self.journal):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _stamp_of(path: Path, sha256: str) -> dict[str, Any]:
    st = path.stat()
    return {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _verified(paths: _Paths, model: Model, out: TextIO | None) -> bool:
    """Is the target already the manifest's file? Hash it only if its stamp is stale."""
    if not paths.target.is_file():
        return False
    expected = _stamp_of(paths.target, model.sha256)
    with contextlib.suppress(OSError, ValueError):
        if json.loads(paths.stamp.read_text()) == expected:
            return True
    if expected["size"] == model.size:
        progress = Progress(f"verify {model.key}", model.size, out)
        if sha256_file(paths.target, progress) == model.sha256:
            paths.stamp.parent.mkdir(parents=True, exist_ok=True)
            paths.stamp.write_text(json.dumps(expected))
            return True
    # A different file under the manifest's name: ComfyUI must not load it.
    paths.target.unlink()
    return False


def _finish(paths: _Paths, model: Model, digest: str) -> None:
    """Rename the verified part into place, or refuse it."""
    if digest != model.sha256:
        paths.clear_partial()
        raise ChecksumMismatch(
            f"{model.key}: sha256 {digest} is not the manifest's {model.sha256}; refused "
            "(the source holds a different file: run `python -m services.fleet models` again)"
        )
    with paths.part.open("rb+") as handle:
        os.fsync(handle.fileno())
    paths.target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(paths.part, paths.target)
    with contextlib.suppress(FileNotFoundError):
        paths.journal.unlink()
    paths.stamp.write_text(json.dumps(_stamp_of(paths.target, model.sha256)))


def _copy_shared(source: Path, paths: _Paths, model: Model, out: TextIO | None) -> None:
    digest = hashlib.sha256()
    progress = Progress(f"copy {model.key}", model.size, out)
    paths.part.parent.mkdir(parents=True, exist_ok=True)
    with source.open("rb") as src, paths.part.open("wb") as dst:
        while chunk := src.read(READ_BYTES):
            digest.update(chunk)
            dst.write(chunk)
            progress.advance(len(chunk))
    progress.done()
    _finish(paths, model, digest.hexdigest())


class _Journal:
    """Which parts of a partial file are complete; the header pins what the parts are of."""

    def __init__(self, path: Path, model: Model, part_bytes: int) -> None:
        self.path = path
        self.header = {"sha256": model.sha256, "size": model.size, "part_bytes": part_bytes}
        self.done: set[int] = set()
        self._lock = threading.Lock()

    def load(self) -> bool:
        """Read an earlier journal of the same file; False if there is none to resume."""
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return False
        if not lines or json.loads(lines[0]) != self.header:
            return False
        # A line cut short by a crash is ignored: that part is fetched again.
        self.done = {int(line) for line in lines[1:] if line.strip().isdigit()}
        return True

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.header) + "\n")

    def mark(self, index: int) -> None:
        with self._lock, self.path.open("a") as handle:
            handle.write(f"{index}\n")
            handle.flush()
            os.fsync(handle.fileno())
            self.done.add(index)


def _fetch_bucket(
    source: RangeSource,
    paths: _Paths,
    model: Model,
    parallel: int,
    part_bytes: int,
    out: TextIO | None,
) -> int:
    size = source.size(model.key)
    if size is None:
        raise FetchError(
            f"{model.key} is not in the models bucket: run `python -m services.fleet models`"
        )
    if size != model.size:
        raise FetchError(
            f"{model.key} in the models bucket is {size} bytes, the manifest says {model.size}: "
            "run `python -m services.fleet models` to replace it"
        )
    journal = _Journal(paths.journal, model, part_bytes)
    if not (journal.load() and paths.part.is_file() and paths.part.stat().st_size == size):
        paths.clear_partial()
        journal.start()
        with paths.part.open("wb") as handle:
            handle.truncate(size)
    parts = [i for i in range((size + part_bytes - 1) // part_bytes) if i not in journal.done]
    progress = Progress(f"fetch {model.key}", size, out)
    progress.advance(size - sum(min(part_bytes, size - i * part_bytes) for i in parts))
    copied = 0

    def fetch_part(index: int) -> int:
        start, end = index * part_bytes, min(size, (index + 1) * part_bytes)
        fd = os.open(paths.part, os.O_WRONLY)
        try:
            offset = start
            for chunk in source.read(model.key, start, end):
                os.pwrite(fd, chunk, offset)
                offset += len(chunk)
                progress.advance(len(chunk))
            if offset != end:
                raise FetchError(f"{model.key}: bytes {start}-{end} came back short ({offset})")
            os.fsync(fd)
        finally:
            os.close(fd)
        journal.mark(index)
        return end - start

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        futures = [pool.submit(fetch_part, i) for i in parts]
        try:
            for future in as_completed(futures):
                copied += future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    progress.done("verifying")
    _finish(paths, model, sha256_file(paths.part))
    return copied


def fetch_models(
    manifest: Manifest,
    dest: Path,
    *,
    bucket: RangeSource | None,
    shared_dir: Path | None = None,
    parallel: int = 8,
    part_bytes: int = PART_BYTES,
    out: TextIO | None = None,
) -> list[Fetched]:
    """Fetch each model not already in place; raise FetchError on the first that fails."""
    results = []
    for model in manifest.models:
        paths = _Paths(dest, model)
        paths.target.parent.mkdir(parents=True, exist_ok=True)
        if _verified(paths, model, out):
            results.append(Fetched(model.key, "present", 0))
            continue
        shared = shared_dir / model.folder / model.file if shared_dir else None
        if shared is not None and shared.is_file() and shared.stat().st_size == model.size:
            try:
                _copy_shared(shared, paths, model, out)
                results.append(Fetched(model.key, "shared", model.size))
                continue
            except ChecksumMismatch as exc:
                if bucket is None:
                    raise
                print(f"{exc}; fetching it from the bucket instead", file=out, flush=True)
        if bucket is None:
            raise FetchError(f"{model.key}: not on the shared volume and no models bucket set")
        copied = _fetch_bucket(bucket, paths, model, parallel, part_bytes, out)
        results.append(Fetched(model.key, "bucket", copied))
    return results
