"""Node catalogues: workers send their ComfyUI's `/object_info`, everyone reads the pool's."""

from __future__ import annotations

import asyncio
import hashlib
import re
import zlib

from fastapi import APIRouter, HTTPException, Request, Response, status

from services.queue.api.deps import Ctx
from services.queue.auth import Anyone, Worker

router = APIRouter(tags=["catalog"])

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
NO_CATALOG = "no worker has reported its nodes yet"


def _gunzip(raw: bytes, limit: int) -> bytes:
    """Inflate a gzip body, refusing more than `limit` bytes (a small body can inflate a lot)."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(raw, limit + 1)
    except zlib.error as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"body is not valid gzip: {exc}") from exc
    if len(out) > limit:
        raise HTTPException(
            status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, f"catalogue larger than {limit} bytes"
        )
    return out


@router.put(
    "/api/worker/catalog/{digest}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={400: {"description": "the body's sha256 is not the one in the path"}},
)
async def put_catalog(digest: str, request: Request, _: Worker, ctx: Ctx) -> None:
    """The body is the exact bytes of the worker's ComfyUI `/object_info` (send it with
    `Content-Encoding: gzip`: ~0.5 MB of JSON is ~10x smaller); `digest` is their sha256 in
    hex, the `catalog_hash` the worker registered with."""
    if not _SHA256.match(digest):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "the path names a sha256 in hex")
    raw = await request.body()
    if request.headers.get("content-encoding", "identity").lower() == "gzip":
        raw = await asyncio.to_thread(_gunzip, raw, ctx.settings.max_catalog_bytes)
    actual = await asyncio.to_thread(lambda: hashlib.sha256(raw).hexdigest())
    if actual != digest:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            f"the body's sha256 is {actual}, not {digest}: send the exact /object_info bytes",
        )
    await ctx.store.put_catalog(digest, raw)


@router.get(
    "/api/catalog",
    responses={
        200: {"content": {"application/json": {}}, "description": "ComfyUI's /object_info"},
        304: {"description": "not modified (If-None-Match)"},
        404: {"description": NO_CATALOG},
    },
)
async def pool_catalog(request: Request, _: Anyone, ctx: Ctx) -> Response:
    """The pool's node catalogue, as ComfyUI's `/object_info`: the union of the live workers'
    catalogues, or the last one any worker sent when none is live."""
    document = await ctx.pool_catalog.current(ctx.store)
    if document is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NO_CATALOG)
    headers = {"ETag": document.etag, "Cache-Control": "no-cache"}
    if document.etag in (t.strip() for t in request.headers.get("if-none-match", "").split(",")):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(document.body, media_type="application/json", headers=headers)
