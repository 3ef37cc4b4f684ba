"""The model fetch onto a host, for real against S3 (moto's server mode over HTTP):
parallel ranges, resume after an interruption, checksums refused, the shared volume first."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator

import pytest

from services.fleet.fetch import (
    STATE_DIR,
    BucketSource,
    ChecksumMismatch,
    FetchError,
    fetch_models,
)
from tests.fleet_helpers import make_blob, manifest_for, write_model

PART = 64 * 1024
BUCKET = "workshop-models"


@pytest.fixture
def models_bucket(s3_server):
    _endpoint, client = s3_server
    client.create_bucket(Bucket=BUCKET)
    blobs = [
        make_blob("checkpoints", "sdxl.safetensors", 10 * PART + 123),
        make_blob("text_encoders", "t5.safetensors", 3 * PART),
        make_blob("vae", "ae.safetensors", 1000),
    ]
    for blob in blobs:
        client.put_object(Bucket=BUCKET, Key=f"{blob.folder}/{blob.file}", Body=blob.data)
    return client, blobs


class CountingSource(BucketSource):
    """The real bucket source, recording the ranges asked for; can fail after some parts."""

    def __init__(self, client, bucket, fail_after_parts: int | None = None) -> None:
        super().__init__(client, bucket)
        self.ranges: list[tuple[str, int, int]] = []
        self.fail_after_parts = fail_after_parts

    def read(self, key: str, start: int, end: int) -> Iterator[bytes]:
        if self.fail_after_parts is not None and len(self.ranges) >= self.fail_after_parts:
            raise ConnectionResetError("network dropped (simulated)")
        self.ranges.append((key, start, end))
        yield from super().read(key, start, end)


def test_fetch_puts_each_model_in_its_folder_and_verifies(models_bucket, tmp_path):
    client, blobs = models_bucket
    source = CountingSource(client, BUCKET)
    results = fetch_models(
        manifest_for(blobs), tmp_path, bucket=source, parallel=4, part_bytes=PART
    )
    assert [r.how for r in results] == ["bucket"] * 3
    for blob in blobs:
        assert (tmp_path / blob.folder / blob.file).read_bytes() == blob.data
    # Byte ranges of one part each, every byte exactly once.
    sdxl = sorted((s, e) for k, s, e in source.ranges if k == "checkpoints/sdxl.safetensors")
    assert len(sdxl) == 11 and sdxl[0] == (0, PART) and sdxl[-1][1] == 10 * PART + 123
    assert all(a[1] == b[0] for a, b in itertools.pairwise(sdxl))
    # A second run (the next boot) trusts the stamps and downloads nothing.
    again = CountingSource(client, BUCKET)
    results = fetch_models(manifest_for(blobs), tmp_path, bucket=again, part_bytes=PART)
    assert [r.how for r in results] == ["present"] * 3 and again.ranges == []


def test_an_interrupted_fetch_resumes_where_it_stopped(models_bucket, tmp_path):
    client, blobs = models_bucket
    manifest = manifest_for(blobs[:1])
    first = CountingSource(client, BUCKET, fail_after_parts=4)
    with pytest.raises(ConnectionResetError):
        fetch_models(manifest, tmp_path, bucket=first, parallel=1, part_bytes=PART)
    target = tmp_path / "checkpoints" / "sdxl.safetensors"
    assert not target.exists()  # never a half file where ComfyUI looks
    journal = tmp_path / STATE_DIR / "checkpoints" / "sdxl.safetensors.part.json"
    done = {int(line) for line in journal.read_text().splitlines()[1:]}
    assert done == {0, 1, 2, 3}

    second = CountingSource(client, BUCKET)
    (result,) = fetch_models(manifest, tmp_path, bucket=second, parallel=3, part_bytes=PART)
    assert result.how == "bucket"
    assert sorted(s // PART for _, s, _ in second.ranges) == list(range(4, 11))
    assert result.bytes_copied == len(blobs[0].data) - 4 * PART
    assert target.read_bytes() == blobs[0].data
    assert not journal.exists()


def test_a_journal_of_another_file_version_is_not_resumed(models_bucket, tmp_path):
    client, blobs = models_bucket
    manifest = manifest_for(blobs[:1])
    with pytest.raises(ConnectionResetError):
        fetch_models(
            manifest,
            tmp_path,
            bucket=CountingSource(client, BUCKET, fail_after_parts=2),
            parallel=1,
            part_bytes=PART,
        )
    journal = tmp_path / STATE_DIR / "checkpoints" / "sdxl.safetensors.part.json"
    lines = journal.read_text().splitlines()
    header = json.loads(lines[0]) | {"sha256": "f" * 64}
    journal.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    source = CountingSource(client, BUCKET)
    fetch_models(manifest, tmp_path, bucket=source, part_bytes=PART)
    assert len(source.ranges) == 11  # started over
    assert (tmp_path / "checkpoints" / "sdxl.safetensors").read_bytes() == blobs[0].data


def test_a_checksum_mismatch_is_refused_and_nothing_is_left_in_place(models_bucket, tmp_path):
    client, blobs = models_bucket
    tampered = bytearray(blobs[1].data)
    tampered[PART + 7] ^= 0xFF  # same size, one byte different
    client.put_object(Bucket=BUCKET, Key="text_encoders/t5.safetensors", Body=bytes(tampered))
    with pytest.raises(ChecksumMismatch, match="refused"):
        fetch_models(
            manifest_for(blobs[1:2]), tmp_path, bucket=BucketSource(client, BUCKET), part_bytes=PART
        )
    assert not (tmp_path / "text_encoders" / "t5.safetensors").exists()
    leftovers = [p for p in (tmp_path / STATE_DIR).rglob("*") if p.is_file()]
    assert leftovers == []


def test_wrong_size_or_missing_object_names_the_models_command(models_bucket, tmp_path):
    client, blobs = models_bucket
    client.delete_object(Bucket=BUCKET, Key="vae/ae.safetensors")
    with pytest.raises(FetchError, match=r"not in the models bucket.*services\.fleet models"):
        fetch_models(manifest_for(blobs[2:]), tmp_path, bucket=BucketSource(client, BUCKET))
    client.put_object(Bucket=BUCKET, Key="vae/ae.safetensors", Body=b"short")
    with pytest.raises(FetchError, match="5 bytes, the manifest says 1000"):
        fetch_models(manifest_for(blobs[2:]), tmp_path, bucket=BucketSource(client, BUCKET))


def test_the_shared_volume_comes_first_and_a_bad_copy_falls_back(models_bucket, tmp_path):
    client, blobs = models_bucket
    shared = tmp_path / "shared"
    write_model(shared, blobs[0])
    bad = bytearray(blobs[1].data)
    bad[0] ^= 1
    (shared / "text_encoders").mkdir()
    (shared / "text_encoders" / "t5.safetensors").write_bytes(bytes(bad))
    source = CountingSource(client, BUCKET)
    results = fetch_models(
        manifest_for(blobs), tmp_path / "host", bucket=source, shared_dir=shared, part_bytes=PART
    )
    assert {r.key: r.how for r in results} == {
        "checkpoints/sdxl.safetensors": "shared",
        "text_encoders/t5.safetensors": "bucket",  # the shared copy was corrupt
        "vae/ae.safetensors": "bucket",  # not on the shared volume
    }
    assert {k for k, _, _ in source.ranges} == {
        "text_encoders/t5.safetensors",
        "vae/ae.safetensors",
    }
    for blob in blobs:
        assert (tmp_path / "host" / blob.folder / blob.file).read_bytes() == blob.data


def test_a_replaced_file_in_place_is_fetched_again(models_bucket, tmp_path):
    client, blobs = models_bucket
    manifest = manifest_for(blobs[2:])
    fetch_models(manifest, tmp_path, bucket=BucketSource(client, BUCKET))
    target = tmp_path / "vae" / "ae.safetensors"
    target.write_bytes(b"x" * 1000)  # same size, other bytes: the stamp no longer matches
    os.utime(target, ns=(1_000_000_000, 1_000_000_000))
    (result,) = fetch_models(manifest, tmp_path, bucket=BucketSource(client, BUCKET))
    assert result.how == "bucket" and target.read_bytes() == blobs[2].data
