"""The models command: fill the models bucket from the sources (real HTTP) into S3 (moto),
verified; a source serving other bytes never leaves an object behind."""

from __future__ import annotations

import io

import httpx
import pytest
import yaml

from services.fleet.__main__ import main
from services.fleet.bucket import fill_bucket, verify_bucket
from services.fleet.fetch import ChecksumMismatch, FetchError
from tests.fleet_helpers import FileServer, make_blob, manifest_for, serve_files

BUCKET = "workshop-models"


@pytest.fixture
def sources():
    blobs = [
        make_blob("checkpoints", "sdxl.safetensors", 300_000),
        make_blob("vae", "ae.safetensors", 5_000),
    ]
    state = FileServer(files={f"/m/{b.folder}/{b.file}": b.data for b in blobs})
    with serve_files(state) as server:
        yield server, blobs, manifest_for(blobs, base_url=f"{server.url}/m")


@pytest.fixture
def bucket(s3_server):
    _, client = s3_server
    client.create_bucket(Bucket=BUCKET)
    return client


def test_fill_uploads_verifies_and_skips_what_is_there(sources, bucket):
    server, blobs, manifest = sources
    out = io.StringIO()
    with httpx.Client() as http:
        stored = fill_bucket(manifest, bucket, BUCKET, http=http, token="hf_x", out=out)
        assert [s.how for s in stored] == ["uploaded", "uploaded"]
        for blob in blobs:
            obj = bucket.get_object(Bucket=BUCKET, Key=f"{blob.folder}/{blob.file}")
            assert obj["Body"].read() == blob.data
            assert obj["Metadata"]["sha256"] == blob.sha256
        assert all(auth == "Bearer hf_x" for _, auth in server.requests)
        assert "upload checkpoints/sdxl.safetensors" in out.getvalue()  # progress lines
        server.requests.clear()
        again = fill_bucket(manifest, bucket, BUCKET, http=http, out=out)
    assert [s.how for s in again] == ["present", "present"] and server.requests == []
    assert verify_bucket(manifest, bucket, BUCKET, deep=True, out=out) == []


def test_a_source_with_other_bytes_is_refused_and_removed(sources, bucket):
    server, blobs, manifest = sources
    path = f"/m/{blobs[1].folder}/{blobs[1].file}"
    server.files[path] = bytes(reversed(blobs[1].data))
    with httpx.Client() as http, pytest.raises(ChecksumMismatch, match="refused and removed"):
        fill_bucket(manifest, bucket, BUCKET, http=http, out=io.StringIO())
    keys = [o["Key"] for o in bucket.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert keys == ["checkpoints/sdxl.safetensors"]  # the good one stays, the bad one is gone
    problems = verify_bucket(manifest, bucket, BUCKET)
    assert [(p.key, p.message) for p in problems] == [("vae/ae.safetensors", "missing")]


def test_a_gated_source_says_to_accept_the_licence(sources, bucket):
    server, blobs, manifest = sources
    gated = manifest.model_copy(
        update={"models": (manifest.models[0].model_copy(update={"gated": True}),)}
    )
    server.status[f"/m/{blobs[0].folder}/{blobs[0].file}"] = 401
    with httpx.Client() as http, pytest.raises(FetchError, match="accept the model's licence"):
        fill_bucket(gated, bucket, BUCKET, http=http, out=io.StringIO())


def test_verify_spots_an_object_that_is_not_the_manifests(sources, bucket):
    _, _blobs, manifest = sources
    bucket.put_object(Bucket=BUCKET, Key="checkpoints/sdxl.safetensors", Body=b"other")
    problems = verify_bucket(manifest, bucket, BUCKET)
    assert "not the manifest's file" in problems[0].message


def test_the_cli_fills_and_verifies_through_the_environment(
    sources, bucket, s3_server, tmp_path, monkeypatch, capsys
):
    _server, blobs, manifest = sources
    endpoint, _ = s3_server
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"models": [m.model_dump() for m in manifest.models]}))
    for key, value in {
        "FLEET_MODELS__BUCKET": BUCKET,
        "FLEET_MODELS__ENDPOINT": endpoint,
        "FLEET_MODELS__ACCESS_KEY_ID": "test",
        "FLEET_MODELS__SECRET_ACCESS_KEY": "test",
        "FLEET_MODELS__REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    assert main(["--manifest", str(path), "verify"]) == 1
    assert main(["--manifest", str(path), "models"]) == 0
    assert "2/2 models verified" in capsys.readouterr().out
    # ... and a host fetches them from there, in place for ComfyUI.
    assert main(["--manifest", str(path), "fetch", "--dest", str(tmp_path / "host")]) == 0
    for blob in blobs:
        assert (tmp_path / "host" / blob.folder / blob.file).read_bytes() == blob.data
