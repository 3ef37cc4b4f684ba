"""The pool's node catalogue: what `/object_info` answers for the whole GPU pool.

Each worker sends its ComfyUI's `/object_info` bytes once per distinct content (named by their
sha256); the queue keeps them in Redis, compressed. The pool's catalogue is the union of the
live workers' catalogues (`services.comfy.catalog.merge_catalogs`: a model any live worker has
is listed), or the last one any worker sent when none is live, so a participant's ComfyUI page
works while the GPUs are off. Merging ~0.5 MB documents is done once per set of catalogues
and replica, in a thread.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field

import orjson

from services.comfy.catalog import merge_catalogs
from services.queue.store import JobStore


@dataclass(frozen=True)
class PoolDocument:
    etag: str  # quoted, as the header carries it
    body: bytes


@dataclass
class PoolCatalog:
    """This replica's cache of the pool's catalogue, keyed by the catalogues it was made of."""

    _cached: tuple[tuple[str, ...], PoolDocument] | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def current(self, store: JobStore) -> PoolDocument | None:
        """The pool's catalogue now, or None if no worker ever sent one."""
        digests = tuple(await store.catalog_hashes())
        if not digests:
            return None
        async with self._lock:
            if self._cached is not None and self._cached[0] == digests:
                return self._cached[1]
            raws = [raw for raw in [await store.get_catalog(d) for d in digests] if raw]
            if not raws:
                return None
            if len(raws) == 1:  # one ComfyUI: its exact bytes
                document = PoolDocument(f'"{digests[0]}"', raws[0])
            else:
                body = await asyncio.to_thread(_merge, raws)
                etag = hashlib.sha256("\n".join(digests).encode()).hexdigest()
                document = PoolDocument(f'"{etag}"', body)
            self._cached = (digests, document)
            return document


def _merge(raws: list[bytes]) -> bytes:
    return orjson.dumps(merge_catalogs(orjson.loads(raw) for raw in raws))
