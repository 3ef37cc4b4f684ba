"""Object storage, both backends, for real: a local directory, and S3 through moto's server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.storage import (
    CHUNK_BYTES,
    ObjectNotFound,
    ObjectStore,
    StorageSettings,
    open_store,
)
from tests.conftest import S3_BUCKET


@pytest.fixture(params=["dir", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    if request.param == "dir":
        yield open_store(StorageSettings(dir=tmp_path / "files"))
        return
    endpoint, _ = request.getfixturevalue("s3_server")
    yield open_store(
        StorageSettings(
            bucket=S3_BUCKET,
            endpoint=endpoint,
            access_key_id="test",
            secret_access_key="test",
            region="us-east-1",
        )
    )


async def collect(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in chunks])


async def test_put_get_stat_list_copy_delete(store: ObjectStore, tmp_path: Path) -> None:
    await store.put("users/u1/input/a.png", b"one", content_type="image/png")
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * (CHUNK_BYTES // 256 * 2 + 3))
    await store.put_file("users/u1/output/j1/big.bin", big)

    assert await store.get("users/u1/input/a.png") == b"one"
    assert await collect(store.stream("users/u1/output/j1/big.bin")) == big.read_bytes()
    info = await store.stat("users/u1/output/j1/big.bin")
    assert info is not None and info.size == big.stat().st_size
    assert await store.stat("users/u1/input/missing.png") is None
    # a prefix that ends inside a name lists only what starts with it
    await store.put("users/u1/input/ab.png", b"two")
    await store.put("users/u10/input/a.png", b"other user")
    assert [o.key for o in await store.list("users/u1/input/a")] == [
        "users/u1/input/a.png",
        "users/u1/input/ab.png",
    ]
    assert [o.key for o in await store.list("users/u1/")] == [
        "users/u1/input/a.png",
        "users/u1/input/ab.png",
        "users/u1/output/j1/big.bin",
    ]

    await store.copy("users/u1/input/a.png", "users/u1/output/j2/a.png")
    assert await store.get("users/u1/output/j2/a.png") == b"one"
    await store.delete("users/u1/input/a.png")
    await store.delete("users/u1/input/a.png")  # deleting twice is fine
    with pytest.raises(ObjectNotFound):
        await store.get("users/u1/input/a.png")
    with pytest.raises(ObjectNotFound):
        await collect(store.stream("users/u1/input/a.png"))
    with pytest.raises(ObjectNotFound):
        await store.copy("users/u1/input/a.png", "users/u1/x.png")


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "a//b", "a/./b", "a\\b", "a/../../b"])
async def test_keys_cannot_leave_the_store(store: ObjectStore, key: str) -> None:
    with pytest.raises(ValueError, match="invalid object key"):
        await store.put(key, b"x")


def test_settings_want_exactly_one_backend(tmp_path: Path) -> None:
    for bad in ({}, {"dir": tmp_path, "bucket": "b"}):
        with pytest.raises(ValueError, match=r"exactly one of storage\.dir"):
            StorageSettings(**bad)  # type: ignore[arg-type]


async def test_a_directory_store_writes_whole_files_only(tmp_path: Path) -> None:
    store = open_store(StorageSettings(dir=tmp_path / "files"))
    unreadable = tmp_path / "a-directory"
    unreadable.mkdir()
    with pytest.raises(IsADirectoryError):
        await store.put_file("users/u/x.bin", unreadable)  # fails after the temp file exists
    assert [p.name for p in (tmp_path / "files").rglob("*") if p.is_file()] == []
