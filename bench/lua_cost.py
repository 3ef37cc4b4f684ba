"""Redis time spent in the queue's Lua scripts per submit -> lease -> complete cycle.

    uv run python -m bench.lua_cost [--cycles 3000] [--users 8] [--modes fair fifo priority]

The HTTP bench's cycles/s swings with the shared machine's speed; this number barely does,
so it is the one to compare when changing a script. A private Redis (AOF on, as in
production) and the service's own JobStore, in process: 8 workers each hold a job, 8 users
keep ~16 jobs queued, and every cycle is one `submit` plus one `complete_claim` (a worker
reports its job done and leases the next), the two scripts of the default HTTP cycle.

Per mode it reports, from `INFO commandstats`: script time (EVALSHA usec) per cycle, split
into submit and complete_claim, and the Redis commands the scripts ran per cycle. Each mode
is measured three times; the minimum is reported (the least disturbed by other tenants).
Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.queue import ADMIN_PASSWORD, OUTPUTS, TOKEN_SECRET, sd15_workflow  # noqa: E402
from services.contracts import Mode  # noqa: E402
from services.local_redis import LocalRedis  # noqa: E402
from services.queue.settings import QueueSettings  # noqa: E402
from services.queue.store import Claim, JobStore  # noqa: E402

WORKERS = 8


async def _script_usec(redis: aioredis.Redis) -> tuple[int, int]:
    """(EVALSHA usec, commands run inside scripts) since the last CONFIG RESETSTAT."""
    stats = await redis.info("commandstats")
    evalsha = stats.get("cmdstat_evalsha", {})
    nested = sum(v["calls"] for k, v in stats.items() if k != "cmdstat_evalsha")
    return int(evalsha.get("usec", 0)), int(nested)


async def measure(url: str, mode: str, cycles: int, users: int) -> dict[str, Any]:
    redis = aioredis.Redis.from_url(url)
    await redis.flushall()
    settings = QueueSettings(
        redis_url=url,
        key_prefix="cq:",
        token_secret=TOKEN_SECRET,
        admin_password=ADMIN_PASSWORD,
        max_queued_per_user=1_000_000,
        max_running_per_user=1_000,
        history_per_user=2_000_000,
        mode=mode,
    )
    store = JobStore(redis, settings)
    workflow = sd15_workflow()
    for i in range(3 * WORKERS):
        await store.submit(f"u{i % users}", 0, workflow, "bench")
    held: list[Claim] = [await store.claim(f"w{i}") for i in range(WORKERS)]
    runs = []
    for _ in range(3):
        await redis.config_resetstat()
        submit_usec = 0
        for first in range(0, cycles, WORKERS):
            before, _ = await _script_usec(redis)
            for i in range(first, first + WORKERS):
                await store.submit(f"u{i % users}", 0, workflow, "bench")
            after, _ = await _script_usec(redis)
            submit_usec += after - before
            for w in range(WORKERS):
                job = held[w].job
                assert job is not None
                _, held[w] = await store.complete_and_claim(
                    job.id, held[w].lease_id, OUTPUTS, f"w{w}"
                )
        total_usec, nested = await _script_usec(redis)
        n = cycles - cycles % WORKERS
        runs.append(
            {
                "script_us_per_cycle": total_usec / n,
                "submit_us": submit_usec / n,
                "complete_claim_us": (total_usec - submit_usec) / n,
                "commands_per_cycle": nested / n,
            }
        )
    await redis.aclose()
    return min(runs, key=lambda r: r["script_us_per_cycle"])


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="lua-cost-") as tmp:
        server = LocalRedis(data_dir=Path(tmp) / "redis", appendonly=True).start()
        assert server.port != 6379
        try:
            out: dict[str, Any] = {}
            for mode in args.modes:
                r = await measure(server.url, mode, args.cycles, args.users)
                print(
                    f"{mode}: {r['script_us_per_cycle']:.0f} us of script time per cycle "
                    f"(submit {r['submit_us']:.0f}, complete_claim {r['complete_claim_us']:.0f}), "
                    f"{r['commands_per_cycle']:.1f} commands per cycle"
                )
                out[mode] = {k: round(v, 1) for k, v in r.items()}
            return out
        finally:
            server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--cycles", type=int, default=3000, help="cycles per measurement")
    ap.add_argument("--users", type=int, default=8)
    ap.add_argument("--modes", nargs="+", default=[Mode.FAIR, Mode.FIFO, Mode.PRIORITY])
    args = ap.parse_args()
    result = asyncio.run(run(args))
    print(json.dumps({"cycles": args.cycles, "users": args.users, **result}))


if __name__ == "__main__":
    main()
