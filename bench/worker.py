"""Worker benchmark: does the GPU ever wait on the worker?

    uv run python -m bench.worker [--jobs 200] [--job-time 0.2] [--two-workers-jobs 200]

Real processes over loopback: Redis, the queue service (uvicorn), the ComfyUI test double
(`python -m tests.comfyui_double`, every prompt takes `--job-time` seconds of simulated GPU
work) and the worker (`python -m services.worker`, attached to it, files to a local
directory). `--jobs` distinct jobs (EmptyImage -> SaveImage, so each stores one PNG) are
queued at once; the clock runs from the first submit to the last `succeeded` event.

- gpu_utilisation: the double's busy time / wall time (per double, then averaged);
- overhead_ms_per_job: (wall - busy) / jobs per double, in ms;
- dispatch_gap_p50/p99_ms: from one prompt's execution_success to the next prompt's
  execution_start on the same double (ComfyUI's own millisecond timestamps, its history);
- worker_cpu_ms_per_job: the worker process's CPU time per job.

Then the same with two workers on two doubles (`--two-workers-jobs`, 0 to skip). Ends with
one JSON line; the single-worker numbers are at the top level.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.queue import ADMIN_PASSWORD, Services, cpu_seconds, pct, start_services  # noqa: E402
from services.local_redis import free_port  # noqa: E402

TARGETS = {"gpu_utilisation": 0.99, "dispatch_gap_p99_ms": 10.0}


def job_graph(tag: int) -> dict[str, Any]:
    """A distinct graph per job (ComfyUI would answer a repeated one from its cache)."""
    return {
        "1": {"class_type": "EmptyImage",
              "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": tag % 0xFFFFFF}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "b"}},
    }  # fmt: skip


def _wait_http(url: str, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as r:  # noqa: S310
            if r.status == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.05)


@dataclass
class Pair:
    """One double and the worker attached to it."""

    double: subprocess.Popen[bytes]
    double_url: str
    worker: subprocess.Popen[bytes]
    name: str


def start_pairs(
    svc: Services, n: int, job_time_s: float, tmp: Path, lease_wait_s: float
) -> list[Pair]:
    pairs = []
    for i, (name, token) in enumerate(list(svc.workers.items())[:n]):
        port = free_port()
        env = {**os.environ, "COMFY_DOUBLE_JOB_TIME_S": str(job_time_s),
               "COMFY_DOUBLE_ROOT": str(tmp / f"double-{i}")}  # fmt: skip
        double = subprocess.Popen(
            [sys.executable, "-m", "tests.comfyui_double", "--listen", "127.0.0.1",
             "--port", str(port), "--disable-auto-launch"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        _wait_http(url + "/system_stats", double, "the ComfyUI double")
        worker_env = {
            **os.environ, "WORKER_QUEUE_URL": svc.urls[0], "WORKER_TOKEN": token,
            "WORKER_COMFYUI_URL": url, "WORKER_STORAGE__DIR": str(tmp / "files"),
            "WORKER_LOG_LEVEL": "WARNING", "WORKER_LEASE_WAIT_S": str(lease_wait_s),
        }  # fmt: skip
        worker = subprocess.Popen(
            [sys.executable, "-m", "services.worker"], cwd=ROOT, env=worker_env,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        pairs.append(Pair(double, url, worker, name))
    return pairs


def stop_pairs(pairs: list[Pair]) -> None:
    for p in pairs:
        for proc in (p.worker, p.double):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
    for p in pairs:
        for proc in (p.worker, p.double):
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _until_idle(http: httpx.AsyncClient, redis_url: str, names: list[str]) -> None:
    """Every worker registered with its ComfyUI up and waiting in an idle long-poll."""
    from redis.asyncio import Redis

    async with asyncio.timeout(60):
        while True:  # state in other processes: looked at every 50 ms
            workers = {w["id"]: w for w in (await http.get("/api/admin/workers")).json()}
            if all(workers.get(n, {}).get("info", {}).get("comfyui", {}).get("up") for n in names):
                break
            await asyncio.sleep(0.05)
    redis = Redis.from_url(redis_url)
    async with asyncio.timeout(30):
        while True:
            seconds, _ = await redis.time()
            idle = await redis.zrangebyscore("cq:idle", seconds * 1000, "+inf")
            if all(n.encode() in idle for n in names):
                break
            await asyncio.sleep(0.02)
    await redis.aclose()


async def measure(
    svc: Services, workers: int, jobs: int, job_time_s: float, lease_wait_s: float
) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    tmp = Path(tempfile.mkdtemp(prefix="worker-bench-"))
    pairs = start_pairs(svc, workers, job_time_s, tmp, lease_wait_s)
    users = list(svc.users)
    try:
        async with httpx.AsyncClient(base_url=svc.urls[0], timeout=60) as http:
            r = await http.post("/api/auth/token",
                                json={"username": "admin", "password": ADMIN_PASSWORD})  # fmt: skip
            admin_token = r.json()["access_token"]
            http.headers["Authorization"] = f"Bearer {admin_token}"
            await _until_idle(http, svc.redis.url, [p.name for p in pairs])
            tokens = {}
            for user in users:
                login = {"username": user, "password": "bench-password"}
                tokens[user] = (await http.post("/api/auth/token", json=login)).json()[
                    "access_token"
                ]
            cpu_before = [cpu_seconds(p.worker.pid) for p in pairs]
            ws_url = "ws" + svc.urls[0].removeprefix("http") + "/api/events"
            admin = {"Authorization": f"Bearer {admin_token}"}
            async with connect(ws_url, additional_headers=admin, max_size=None) as ws:
                started = time.perf_counter()
                started_unix_ms = time.time() * 1000  # ComfyUI's timestamps are Unix ms

                async def submit(i: int) -> str:
                    user = users[i % len(users)]
                    auth = {"Authorization": f"Bearer {tokens[user]}"}
                    r = await http.post("/api/jobs", json={"workflow": job_graph(i)}, headers=auth)
                    r.raise_for_status()
                    return str(r.json()["id"])

                ids = set(await asyncio.gather(*(submit(i) for i in range(jobs))))
                ended: dict[str, str] = {}
                async with asyncio.timeout(jobs * job_time_s * 3 + 60):
                    while len(ended) < jobs:
                        event = orjson.loads(await ws.recv())
                        if event["job"] in ids and event["type"] in ("succeeded", "failed"):
                            ended[event["job"]] = event["type"]
                wall = time.perf_counter() - started
                ended_unix_ms = started_unix_ms + wall * 1000
            cpu = [cpu_seconds(p.worker.pid) - b for p, b in zip(pairs, cpu_before, strict=True)]
            doubles = []
            for p in pairs:
                stats = (await http.get(p.double_url + "/__double__/stats")).json()
                history = (await http.get(p.double_url + "/history")).json()
                doubles.append((stats, history))
    finally:
        stop_pairs(pairs)
    return summarise(wall, jobs, doubles, cpu, ended, (started_unix_ms, ended_unix_ms))


def summarise(
    wall: float,
    jobs: int,
    doubles: list[tuple[dict[str, Any], dict[str, Any]]],
    worker_cpu_s: list[float],
    ended: dict[str, str],
    clock: tuple[float, float],
) -> dict[str, Any]:
    """`clock`: the run's first submit and last success, in Unix ms (ComfyUI's clock)."""
    gaps: list[float] = []
    busy = 0.0
    idle = {"before_first_ms": 0.0, "between_ms": 0.0, "after_last_ms": 0.0}
    for stats, history in doubles:
        busy += stats["busy_s"]
        spans = []
        for entry in history.values():
            times = {t: d["timestamp"] for t, d in entry["status"]["messages"]}
            end = times.get("execution_success") or times.get("execution_error")
            spans.append((times["execution_start"], end))
        spans.sort()
        between = [float(b[0] - a[1]) for a, b in itertools.pairwise(spans)]
        gaps += between
        if spans:  # where each double's idle time went, summed over the doubles
            idle["before_first_ms"] += spans[0][0] - clock[0]
            idle["between_ms"] += sum(between)
            idle["after_last_ms"] += clock[1] - spans[-1][1]
    n = len(doubles)
    return {
        "gpu_utilisation": round(busy / (wall * n), 4),
        "overhead_ms_per_job": round((wall * n - busy) / jobs * 1000, 2),
        "dispatch_gap_p50_ms": pct(gaps, 50),
        "dispatch_gap_p99_ms": pct(gaps, 99),
        "dispatch_gap_max_ms": max(gaps) if gaps else float("nan"),
        "wall_s": round(wall, 3),
        "busy_s": round(busy, 3),
        "worker_cpu_ms_per_job": round(sum(worker_cpu_s) / jobs * 1000, 2),
        "prompts_per_double": [len(h) for _, h in doubles],
        "idle": {k: round(v, 1) for k, v in idle.items()},
        "failed": sum(1 for state in ended.values() if state != "succeeded"),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    svc = start_services(replicas=1, n_users=args.users, n_workers=2, appendonly=False)
    try:
        one = await measure(svc, 1, args.jobs, args.job_time, args.lease_wait)
        result: dict[str, Any] = {"jobs": args.jobs, "job_time_s": args.job_time, **one}
        if args.two_workers_jobs:
            result["two_workers"] = {
                "jobs": args.two_workers_jobs,
                **await measure(svc, 2, args.two_workers_jobs, args.job_time, args.lease_wait),
            }
    finally:
        svc.stop()
    result["targets"] = TARGETS
    result["cpu_count"] = os.cpu_count()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--job-time", type=float, default=0.2, help="seconds per prompt")
    parser.add_argument("--two-workers-jobs", type=int, default=200, help="0: skip")
    parser.add_argument("--users", type=int, default=4, help="participants submitting")
    parser.add_argument(
        "--lease-wait", type=float, default=2.0, help="the workers' long-poll (s): shutdown waits"
    )
    args = parser.parse_args()
    result = asyncio.run(run(args))
    for label, r in (("1 worker", result), ("2 workers", result.get("two_workers"))):
        if r:
            print(f"{label}: utilisation {r['gpu_utilisation']:.4f}, overhead "
                  f"{r['overhead_ms_per_job']} ms/job, gap p99 {r['dispatch_gap_p99_ms']} ms",
                  file=sys.stderr)  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
