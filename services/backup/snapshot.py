"""Key-level Redis snapshot: DUMP + PTTL over SCAN, restored with RESTORE ... REPLACE.

Key-level rather than an RDB file so a restore works against any running Redis,
whatever its AOF state, without restarting it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import redis

BATCH = 500


def dump_keys(client: redis.Redis) -> Iterator[dict[str, Any]]:
    """Yield {key, ttl_ms, value} records (bytes base64-encoded) for every key."""
    batch: list[bytes] = []
    for key in client.scan_iter(count=BATCH):
        batch.append(key)
        if len(batch) >= BATCH:
            yield from _dump_batch(client, batch)
            batch = []
    if batch:
        yield from _dump_batch(client, batch)


def _dump_batch(client: redis.Redis, keys: list[bytes]) -> Iterator[dict[str, Any]]:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.dump(key)
        pipe.pttl(key)
    results = pipe.execute()
    for i, key in enumerate(keys):
        value, ttl = results[2 * i], results[2 * i + 1]
        if value is None:  # expired or deleted between SCAN and DUMP
            continue
        yield {
            "key": base64.b64encode(key).decode(),
            "ttl_ms": ttl if ttl and ttl > 0 else 0,
            "value": base64.b64encode(value).decode(),
        }


def to_jsonl(records: Iterator[dict[str, Any]]) -> tuple[bytes, int]:
    """Serialize records, one JSON object per line; returns (data, count)."""
    lines = [json.dumps(r, separators=(",", ":")) for r in records]
    return ("\n".join(lines) + ("\n" if lines else "")).encode(), len(lines)


def restore_keys(client: redis.Redis, data: bytes) -> int:
    """RESTORE every record with REPLACE; returns how many keys were restored."""
    count = 0
    pipe = client.pipeline(transaction=False)
    for line in data.decode().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        pipe.restore(
            base64.b64decode(rec["key"]),
            int(rec["ttl_ms"]),
            base64.b64decode(rec["value"]),
            replace=True,
        )
        count += 1
        if count % BATCH == 0:
            pipe.execute()
    pipe.execute()
    return count
