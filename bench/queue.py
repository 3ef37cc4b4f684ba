"""Queue service benchmark: a real Redis, the real service over loopback HTTP.

    uv run python -m bench.queue [--jobs 5000] [--workers 8] [--replicas 1]

The service runs as separate uvicorn processes (uvloop + httptools, no access log), so the
bench client never shares a GIL with it. The client is pyreqwest (Rust's reqwest) with one
keep-alive pool: on 2 shared cores every millisecond the load generator spends is taken from
the service, and aiohttp costs ~0.12 ms of CPU per request against pyreqwest's ~0.07.

Three measurements, in this order:

1. throughput: 8 worker coroutines loop lease (long-poll) -> complete while submitters keep
   a bounded backlog queued across several users; cycles/s = completed / elapsed over
   `--jobs` jobs after `--warmup` jobs.
2. dispatch gap: queue empty, one worker parked in long-poll; time from just before the
   submit is sent to the worker's lease response arriving. "Parked" is detected without
   sleeping: the claim script stamps the worker in the `workers` zset, and the service adds
   the long-poll waiter *before* it runs claim, so once the stamp changes any later submit
   is guaranteed to wake this worker. The bench resets that stamp to 0 before each lease
   (a liveness field only) and polls it.
3. submit latency: an open-loop generator sends submits at scheduled times (`--rate`/s for
   `--rate-seconds`), while the 8 workers drain; latency from the request being sent to its
   response (and, to expose client-side lag, from the scheduled send time).
4. burst (issue 13): `--burst-reads` GET /api/jobs sent at once, then `--burst-participants`
   participants each sending `--burst-submits` submits back to back, all participants at once,
   while the 8 workers drain; errors (anything but 200/201, or no answer) and latency p99.

Ends with exactly one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
from pyreqwest.client import Client as HttpClient
from pyreqwest.client import ClientBuilder

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.contracts import REDIS_APPENDFSYNC, WORKER_TOKEN_PREFIX, Role  # noqa: E402
from services.local_redis import LocalRedis, free_port  # noqa: E402

TRACE = ROOT.parent / "shared" / "comfyui" / "10_sd15_txt2img_random_ckpt.json"
ADMIN_PASSWORD = "bench-admin-password"
TOKEN_SECRET = "bench-secret-bench-secret-bench-secret"
KEY_PREFIX = "cq:"
TARGETS = {"cycles_per_s": 1000.0, "dispatch_gap_p99_ms": 10.0, "submit_p99_ms": 10.0}

# Fallback if the trace file is absent: the same SD1.5 txt2img graph.
_SD15 = {
    "4": {
        "class_type": "CheckpointLoaderSimple",
        "inputs": {"ckpt_name": "random-sd15.safetensors"},
    },
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a photo of a cat", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    "3": {
        "class_type": "KSampler",
        "inputs": {
            "seed": 42,
            "steps": 2,
            "cfg": 7.0,
            "sampler_name": "euler",
            "scheduler": "normal",
            "denoise": 1.0,
            "model": ["4", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["5", 0],
        },
    },
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {
        "class_type": "SaveImage",
        "inputs": {"images": ["8", 0], "filename_prefix": "trace_sd15"},
    },
}


def sd15_workflow() -> dict[str, Any]:
    """The first POST /prompt body's `prompt` from trace 10 (the SD1.5 txt2img graph)."""
    if TRACE.exists():
        for ev in json.loads(TRACE.read_text())["events"]:
            req = ev.get("request") or {}
            if (
                ev.get("kind") == "http"
                and req.get("method") == "POST"
                and req.get("path") == "/prompt"
            ):
                return req["json"]["prompt"]
    return _SD15


OUTPUTS = {
    "9": {"images": [{"filename": "trace_sd15_00001_.png", "subfolder": "", "type": "output"}]}
}


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))
    return s[k]


def machine_busy_seconds() -> float:
    """Busy CPU time of the whole machine (all cores), from /proc/stat."""
    try:
        v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = v[3] + v[4]
        return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def cpu_seconds(pid: int | list[int]) -> float:
    if isinstance(pid, list):
        return sum(cpu_seconds(p) for p in pid)
    return _cpu_seconds(pid)


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process from /proc (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError):
        return float("nan")


# --------------------------------------------------------------------------- services
@dataclass
class Services:
    redis: LocalRedis
    procs: list[subprocess.Popen[bytes]]
    urls: list[str]
    users: dict[str, str]
    workers: dict[str, str]
    tmp: tempfile.TemporaryDirectory[str]

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.redis.stop()
        self.tmp.cleanup()


def queue_env(
    redis_url: str, users: list[str], password_hash: str, workers: dict[str, str], **extra: str
) -> dict[str, str]:
    """The environment of a benchmark's queue process: every user with one password hash,
    limits far above any load (the benchmarks measure the queue, not its limits)."""
    return {
        **os.environ,
        "QUEUE_REDIS_URL": redis_url,
        "QUEUE_TOKEN_SECRET": TOKEN_SECRET,
        "QUEUE_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "QUEUE_USERS": json.dumps(
            {u: {"password_hash": password_hash, "role": Role.PARTICIPANT} for u in users}
        ),
        "QUEUE_WORKER_TOKENS": json.dumps(workers),
        "QUEUE_MAX_QUEUED_PER_USER": "100000",
        "QUEUE_MAX_RUNNING_PER_USER": "1000",
        "QUEUE_HISTORY_PER_USER": "101000",
        **extra,
    }


def start_services(
    replicas: int,
    n_users: int,
    n_workers: int,
    appendonly: bool,
    appendfsync: str = REDIS_APPENDFSYNC,
    burst_users: int = 0,
) -> Services:
    import argon2  # the cheapest argon2id hash: login is not measured, only needed

    tmp = tempfile.TemporaryDirectory(prefix="queue-bench-")
    server = LocalRedis(
        data_dir=Path(tmp.name) / "redis", appendonly=appendonly, appendfsync=appendfsync
    ).start()
    assert server.port != 6379
    cheap = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    one_hash = cheap.hash("bench-password")  # one hash for all, verified in microseconds
    users = {f"bench-u{i}": "bench-password" for i in range(n_users)}
    users |= {f"bench-p{i}": "bench-password" for i in range(burst_users)}
    workers = {f"bw{i}": f"{WORKER_TOKEN_PREFIX}bench-token-{i}" for i in range(n_workers)}
    env = queue_env(server.url, list(users), one_hash, workers, QUEUE_LEASE_TTL_S="60")
    procs, urls = [], []
    for _ in range(replicas):
        port = free_port()
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "services.queue.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL))
        urls.append(f"http://127.0.0.1:{port}")
    svc = Services(server, procs, urls, users, workers, tmp)
    try:
        deadline = time.monotonic() + 30
        for p, url in zip(procs, urls, strict=True):
            while True:
                if p.poll() is not None:
                    raise RuntimeError(f"service on {url} exited with {p.returncode}")
                with contextlib.suppress(OSError):
                    import urllib.request

                    with urllib.request.urlopen(url + "/api/health", timeout=1) as r:  # noqa: S310
                        if r.status == 200:
                            break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"service on {url} did not start")
                time.sleep(0.05)
    except BaseException:
        svc.stop()
        raise
    return svc


# --------------------------------------------------------------------------- client
JSON_HDR = {"Content-Type": "application/json"}


@dataclass
class Client:
    http: HttpClient
    urls: list[str]
    user_auth: dict[str, dict[str, str]] = field(default_factory=dict)
    worker_auth: dict[str, dict[str, str]] = field(default_factory=dict)

    async def post(self, url: str, body: Any, headers: dict[str, str]) -> tuple[int, bytes]:
        request = self.http.post(url).body_bytes(orjson.dumps(body)).headers(headers).build()
        response = await request.send()
        return response.status, (await response.bytes()).to_bytes()

    async def submit(self, user: str, url: str, body: dict[str, Any]) -> dict[str, Any]:
        status, raw = await self.post(url + "/api/jobs", body, self.user_auth[user])
        if status != 201:
            raise RuntimeError(f"submit: {status} {raw[:200]!r}")
        return orjson.loads(raw)


async def login(client: Client, svc: Services) -> None:
    for user, password in svc.users.items():
        status, raw = await client.post(
            svc.urls[0] + "/api/auth/token", {"username": user, "password": password}, JSON_HDR
        )
        assert status == 200, raw
        client.user_auth[user] = {
            **JSON_HDR,
            "Authorization": "Bearer " + orjson.loads(raw)["access_token"],
        }
    for name, token in svc.workers.items():
        client.worker_auth[name] = {**JSON_HDR, "Authorization": "Bearer " + token}


@dataclass
class BenchWorker:
    client: Client
    name: str
    url: str
    worker_id: str = ""

    async def register(self) -> None:
        status, raw = await self.client.post(
            self.url + "/api/worker/register",
            {"gpu": "bench", "provider": "bench"},
            self.client.worker_auth[self.name],
        )
        assert status == 200, raw
        self.worker_id = orjson.loads(raw)["worker_id"]

    async def lease(
        self, wait_s: float, finished: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """Lease the next job; with `finished`, report that job's success in the same call."""
        body: dict[str, Any] = {"worker_id": self.worker_id, "wait_s": wait_s}
        if finished is not None:
            body["complete"] = {
                "job_id": finished["job"]["id"], "lease_id": finished["lease_id"],
                "outputs": OUTPUTS,
            }
        status, raw = await self.client.post(
            self.url + "/api/worker/lease", body, self.client.worker_auth[self.name]
        )
        if status != 200:
            raise RuntimeError(f"lease: {status} {raw[:200]!r}")
        return orjson.loads(raw).get("lease")

    async def complete(self, lease: dict[str, Any]) -> None:
        job_id = lease["job"]["id"]
        status, raw = await self.client.post(
            f"{self.url}/api/worker/jobs/{job_id}/complete",
            {"worker_id": self.worker_id, "lease_id": lease["lease_id"], "outputs": OUTPUTS},
            self.client.worker_auth[self.name],
        )
        if status != 204:
            raise RuntimeError(f"complete: {status} {raw[:200]!r}")


#: How workers report a finished job: its own request, or folded into the next lease call.
COMBINED = {"on": False}


async def drain_loop(w: BenchWorker, stop: asyncio.Event, on_done: Any, wait_s: float) -> None:
    """lease -> complete until told to stop; a short wait_s so parked polls end soon."""
    held: dict[str, Any] | None = None
    while not stop.is_set():
        if COMBINED["on"]:
            finished, held = held, await w.lease(wait_s, held)
            if finished is not None:
                on_done()
            continue
        lease = await w.lease(wait_s)
        if lease is not None:
            await w.complete(lease)
            on_done()
    if held is not None:
        await w.complete(held)
        on_done()


# --------------------------------------------------------------------------- phases
async def phase_throughput(
    client: Client,
    workers: list[BenchWorker],
    body: dict[str, Any],
    jobs: int,
    warmup: int,
    backlog: int,
    submitters: int,
    pids: dict[str, int],
) -> dict[str, Any]:
    total = jobs + warmup
    users = list(client.user_auth)
    state = {"submitted": 0, "completed": 0}
    stop = asyncio.Event()
    marks: dict[str, float] = {}
    cpu0: dict[str, float] = {}

    room = asyncio.Semaphore(backlog)  # at most `backlog` jobs submitted but not completed

    def on_done() -> None:
        room.release()
        state["completed"] += 1
        c = state["completed"]
        if c == warmup:
            marks["t0"] = time.perf_counter()
            cpu0.update({k: cpu_seconds(p) for k, p in pids.items()})
            cpu0["machine"] = machine_busy_seconds()
        if c == total:
            marks["t1"] = time.perf_counter()
            marks.update({"cpu_" + k: cpu_seconds(p) - cpu0[k] for k, p in pids.items()})
            marks["cpu_machine"] = machine_busy_seconds() - cpu0["machine"]
            stop.set()

    async def submitter(i: int) -> None:
        n = 0
        while state["submitted"] < total:
            await room.acquire()
            if state["submitted"] >= total:
                room.release()
                break
            state["submitted"] += 1
            user = users[(i + n) % len(users)]
            url = client.urls[(i + n) % len(client.urls)]
            n += 1
            await client.submit(user, url, body)

    tasks = [asyncio.create_task(drain_loop(w, stop, on_done, 1.0)) for w in workers]
    subs = [asyncio.create_task(submitter(i)) for i in range(submitters)]
    await asyncio.gather(*subs)
    await asyncio.wait_for(stop.wait(), timeout=120)
    await asyncio.gather(*tasks)  # parked polls end within wait_s
    elapsed = marks["t1"] - marks["t0"]
    out = {"cycles_per_s": jobs / elapsed, "throughput_elapsed_s": elapsed, "jobs": jobs}
    for k in pids:
        out[f"cpu_{k}_pct"] = 100 * marks["cpu_" + k] / elapsed
    # CPU used by anything else on the machine meanwhile (other tenants skew results).
    ours = sum(marks["cpu_" + k] for k in pids)
    out["cpu_other_pct"] = max(0.0, 100 * (marks["cpu_machine"] - ours) / elapsed)
    # CPU cost per cycle: robust to other tenants stealing the machine, unlike cycles/s.
    out["service_cpu_ms_per_cycle"] = 1000 * marks["cpu_service"] / jobs
    out["redis_cpu_ms_per_cycle"] = 1000 * marks["cpu_redis"] / jobs
    return out


async def phase_ceiling(client: Client, concurrency: int, seconds: float) -> dict[str, Any]:
    """Upper bound of the HTTP stack alone: GET /api/health (no auth, no Redis)."""
    n = {"n": 0}
    end = time.perf_counter() + seconds

    async def loop(i: int) -> None:
        url = client.urls[i % len(client.urls)] + "/api/health"
        while time.perf_counter() < end:
            await (await client.http.get(url).build().send()).bytes()
            n["n"] += 1

    t = time.perf_counter()
    await asyncio.gather(*(loop(i) for i in range(concurrency)))
    rps = n["n"] / (time.perf_counter() - t)
    return {"health_rps": rps, "cycles_ceiling_per_s": rps / 3}


async def _timed_lease(worker: BenchWorker, got: dict[str, float]) -> dict[str, Any] | None:
    lease = await worker.lease(30.0)
    got["t"] = time.perf_counter()
    return lease


async def phase_dispatch_gap(
    client: Client, worker: BenchWorker, r: aioredis.Redis, body: dict[str, Any], samples: int
) -> dict[str, Any]:
    users = list(client.user_auth)
    gaps: list[float] = []
    wkey = KEY_PREFIX + "workers"
    for i in range(samples):
        await r.zadd(wkey, {worker.worker_id: 0}, xx=True)
        got: dict[str, float] = {}

        task = asyncio.create_task(_timed_lease(worker, got))
        # Polling Redis, not sleeping for a guess: claim ran => the waiter is parked.
        while not await r.zscore(wkey, worker.worker_id):  # noqa: ASYNC110
            await asyncio.sleep(0.0002)
        url = client.urls[(i + 1) % len(client.urls)]  # with replicas, submit elsewhere
        t0 = time.perf_counter()
        sub = asyncio.create_task(client.submit(users[i % len(users)], url, body))
        lease = await task
        await sub
        assert lease is not None, "parked worker got no job"
        gaps.append((got["t"] - t0) * 1000)
        await worker.complete(lease)
    return {
        "dispatch_gap_p50_ms": pct(gaps, 50),
        "dispatch_gap_p99_ms": pct(gaps, 99),
        "dispatch_gap_max_ms": max(gaps),
        "dispatch_samples": len(gaps),
    }


async def phase_open_loop(
    client: Client, workers: list[BenchWorker], body: dict[str, Any], rate: float, seconds: float
) -> dict[str, Any]:
    users = list(client.user_auth)
    n = int(rate * seconds)
    sent_lat: list[float] = []
    sched_lat: list[float] = []
    stop = asyncio.Event()
    done = {"n": 0}

    def on_done() -> None:
        done["n"] += 1

    drains = [asyncio.create_task(drain_loop(w, stop, on_done, 1.0)) for w in workers]

    async def one(i: int, scheduled: float) -> None:
        t_send = time.perf_counter()
        await client.submit(users[i % len(users)], client.urls[i % len(client.urls)], body)
        t = time.perf_counter()
        sent_lat.append((t - t_send) * 1000)
        sched_lat.append((t - scheduled) * 1000)

    loop = asyncio.get_running_loop()
    start = time.perf_counter() + 0.05
    inflight = []
    for i in range(n):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        inflight.append(loop.create_task(one(i, scheduled)))
    await asyncio.gather(*inflight)
    deadline = time.perf_counter() + 30
    while done["n"] < n and time.perf_counter() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.gather(*drains)
    return {
        "submit_p50_ms": pct(sent_lat, 50),
        "submit_p99_ms": pct(sent_lat, 99),
        "submit_max_ms": max(sent_lat),
        "submit_from_schedule_p99_ms": pct(sched_lat, 99),
        "submit_rate_per_s": rate,
        "submit_count": n,
        "open_loop_completed": done["n"],
    }


async def phase_burst(
    client: Client,
    workers: list[BenchWorker],
    body: dict[str, Any],
    reads: int,
    participants: list[str],
    per_participant: int,
) -> dict[str, Any]:
    """A workshop's worst moment: every browser refreshing at once, then every participant
    clicking Queue several times; the workers drain meanwhile."""
    stop = asyncio.Event()
    done = {"n": 0}

    def on_done() -> None:
        done["n"] += 1

    drains = [asyncio.create_task(drain_loop(w, stop, on_done, 1.0)) for w in workers]
    read_lat: list[float] = []
    submit_lat: list[float] = []
    errors = {"read": 0, "submit": 0}

    async def read(i: int) -> None:
        user = participants[i % len(participants)]
        url = client.urls[i % len(client.urls)] + "/api/jobs?limit=20"
        t = time.perf_counter()
        try:
            response = await client.http.get(url).headers(client.user_auth[user]).build().send()
            await response.bytes()
            ok = response.status == 200
        except Exception:  # any failure to answer is an error of the burst
            ok = False
        read_lat.append((time.perf_counter() - t) * 1000)
        errors["read"] += not ok

    async def participant(i: int, user: str) -> None:
        url = client.urls[i % len(client.urls)] + "/api/jobs"
        for _ in range(per_participant):
            t = time.perf_counter()
            try:
                status, _raw = await client.post(url, body, client.user_auth[user])
                ok = status == 201
            except Exception:  # likewise
                ok = False
            submit_lat.append((time.perf_counter() - t) * 1000)
            errors["submit"] += not ok

    t = time.perf_counter()
    await asyncio.gather(*(read(i) for i in range(reads)))
    reads_s = time.perf_counter() - t
    t = time.perf_counter()
    await asyncio.gather(*(participant(i, u) for i, u in enumerate(participants)))
    submits_s = time.perf_counter() - t
    n = len(participants) * per_participant
    deadline = time.perf_counter() + 60
    while done["n"] < n - errors["submit"] and time.perf_counter() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.gather(*drains)
    return {
        "burst_reads": reads,
        "burst_read_errors": errors["read"],
        "burst_read_p50_ms": pct(read_lat, 50),
        "burst_read_p99_ms": pct(read_lat, 99),
        "burst_reads_s": reads_s,
        "burst_participants": len(participants),
        "burst_submits": n,
        "burst_submit_errors": errors["submit"],
        "burst_submit_p50_ms": pct(submit_lat, 50),
        "burst_submit_p99_ms": pct(submit_lat, 99),
        "burst_submit_max_ms": max(submit_lat),
        "burst_submits_s": submits_s,
        "burst_completed": done["n"],
    }


async def phase_store(url: str, body: dict[str, Any], jobs: int, n_workers: int) -> dict[str, Any]:
    """The same cycles without HTTP: JobStore calls (the Lua scripts) from 8 coroutines in this
    process, to separate the queue's own cost from the web stack's."""
    from services.queue.settings import QueueSettings
    from services.queue.store import JobStore

    settings = QueueSettings(
        redis_url=url, key_prefix="cqstore:", token_secret=TOKEN_SECRET,
        admin_password=ADMIN_PASSWORD, max_queued_per_user=jobs, max_running_per_user=jobs,
        history_per_user=2 * jobs,
    )
    redis = aioredis.Redis.from_url(url)
    store = JobStore(redis, settings)
    submitted = asyncio.Queue[bool]()  # one True per queued job, then one False per worker
    done = 0

    async def submitter(user: str, n: int) -> None:
        for _ in range(n):
            await store.submit(user, 0, body["workflow"], "bench")
            submitted.put_nowait(True)

    async def worker(name: str) -> None:
        nonlocal done
        while await submitted.get():
            claim = await store.claim(name)
            assert claim.job is not None
            await store.complete(claim.job.id, claim.lease_id, {})
            done += 1

    async def submit_all() -> None:
        await asyncio.gather(*(submitter(f"u{i}", jobs // 8) for i in range(8)))
        for _ in range(n_workers):
            submitted.put_nowait(False)

    t = time.perf_counter()
    await asyncio.gather(submit_all(), *(worker(f"store-w{i}") for i in range(n_workers)))
    elapsed = time.perf_counter() - t
    await redis.aclose()
    return {"store_cycles_per_s": done / elapsed, "store_jobs": done}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    svc = start_services(
        args.replicas, args.users, args.workers, not args.no_aof, args.appendfsync,
        args.burst_participants,
    )
    try:
        builder = ClientBuilder().http1_only().timeout(timedelta(seconds=90))
        async with builder.build() as http:
            client = Client(http, svc.urls)
            await login(client, svc)
            names = list(svc.workers)
            workers = [
                BenchWorker(client, names[i], svc.urls[i % len(svc.urls)])
                for i in range(args.workers)
            ]
            await asyncio.gather(*(w.register() for w in workers))
            body = {"workflow": sd15_workflow(), "client_id": "bench-client"}
            pids: dict[str, Any] = {
                "service": [p.pid for p in svc.procs],
                "redis": svc.redis.process.pid,
                "bench": os.getpid(),
            }  # type: ignore[union-attr]
            r = aioredis.Redis.from_url(svc.redis.url)
            try:
                result: dict[str, Any] = {}
                t = time.perf_counter()
                result |= await phase_throughput(
                    client,
                    workers,
                    body,
                    args.jobs,
                    args.warmup,
                    args.backlog,
                    args.submitters,
                    pids,
                )
                print(
                    f"throughput: {result['cycles_per_s']:.0f} cycles/s over {args.jobs} jobs "
                    f"({result['throughput_elapsed_s']:.2f} s; cpu % of one core: service "
                    f"{result['cpu_service_pct']:.0f} (all replicas), "
                    f"redis {result['cpu_redis_pct']:.0f}, bench {result['cpu_bench_pct']:.0f}, "
                    f"other tenants {result['cpu_other_pct']:.0f}); "
                    f"service CPU {result['service_cpu_ms_per_cycle']:.2f} ms/cycle, redis "
                    f"{result['redis_cpu_ms_per_cycle']:.2f} ms/cycle",
                    flush=True,
                )
                result |= await phase_ceiling(client, args.workers + args.submitters, 2.0)
                print(
                    f"HTTP ceiling: GET /api/health {result['health_rps']:.0f} req/s with "
                    f"{args.workers + args.submitters} connections -> at most "
                    f"{result['cycles_ceiling_per_s']:.0f} cycles/s (3 requests each)",
                    flush=True,
                )
                result |= await phase_dispatch_gap(client, workers[0], r, body, args.gap_samples)
                print(
                    f"dispatch gap: p50 {result['dispatch_gap_p50_ms']:.2f} ms, "
                    f"p99 {result['dispatch_gap_p99_ms']:.2f} ms, max "
                    f"{result['dispatch_gap_max_ms']:.2f} ms ({args.gap_samples} samples)",
                    flush=True,
                )
                result |= await phase_open_loop(client, workers, body, args.rate, args.rate_seconds)
                print(
                    f"submit @ {args.rate:.0f}/s open loop: p50 {result['submit_p50_ms']:.2f} ms, "
                    f"p99 {result['submit_p99_ms']:.2f} ms, max {result['submit_max_ms']:.2f} ms "
                    f"(p99 from scheduled send {result['submit_from_schedule_p99_ms']:.2f} ms)",
                    flush=True,
                )
                if args.burst_reads or args.burst_participants:
                    burst_users = [u for u in client.user_auth if u.startswith("bench-p")]
                    result |= await phase_burst(
                        client, workers, body, args.burst_reads,
                        burst_users or list(client.user_auth), args.burst_submits,
                    )  # fmt: skip
                    print(
                        f"burst: {args.burst_reads} reads at once: "
                        f"{result['burst_read_errors']} errors, p99 "
                        f"{result['burst_read_p99_ms']:.1f} ms; {result['burst_participants']} "
                        f"participants x {args.burst_submits} submits: "
                        f"{result['burst_submit_errors']} errors, p99 "
                        f"{result['burst_submit_p99_ms']:.1f} ms",
                        flush=True,
                    )
                result |= await phase_store(svc.redis.url, body, 8 * (args.jobs // 8), args.workers)
                print(
                    f"store only (no HTTP, one process): {result['store_cycles_per_s']:.0f} "
                    f"submit+claim+complete cycles/s over {result['store_jobs']} jobs",
                    flush=True,
                )
                result["bench_wall_s"] = time.perf_counter() - t
                states = {
                    k.decode(): int(v) for k, v in (await r.hgetall(KEY_PREFIX + "states")).items()
                }
                result["leftover_live_jobs"] = sum(states.values())
            finally:
                await r.aclose()
    finally:
        svc.stop()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--jobs", type=int, default=5000, help="measured cycles (after warm-up)")
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--workers", type=int, default=8, help="concurrent worker coroutines")
    ap.add_argument("--replicas", type=int, default=1, help="service processes sharing one Redis")
    ap.add_argument("--users", type=int, default=8, help="submitting users (round-robin)")
    ap.add_argument("--submitters", type=int, default=8, help="concurrent submit coroutines")
    ap.add_argument("--backlog", type=int, default=64, help="max jobs queued ahead of workers")
    ap.add_argument("--gap-samples", type=int, default=300)
    ap.add_argument("--rate", type=float, default=200.0, help="open-loop submits per second")
    ap.add_argument("--rate-seconds", type=float, default=10.0)
    ap.add_argument("--burst-reads", type=int, default=1000, help="GET /api/jobs at once")
    ap.add_argument("--burst-participants", type=int, default=200)
    ap.add_argument("--burst-submits", type=int, default=5, help="submits per participant")
    ap.add_argument("--no-aof", action="store_true", help="Redis without appendonly")
    ap.add_argument(
        "--appendfsync", choices=["everysec", "always"], default="everysec",
        help="Redis AOF fsync policy (always: every acknowledged write is on disk)",
    )
    ap.add_argument(
        "--separate", action="store_true",
        help="workers report each completion with its own complete call (3 requests per "
        "cycle) instead of folding it into their next lease call (2 requests per cycle)",
    )
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    random.seed(args.seed)
    COMBINED["on"] = not args.separate
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(run(args))
    met = {
        k: (result[k] >= v if k == "cycles_per_s" else result[k] <= v) for k, v in TARGETS.items()
    }
    for k, v in TARGETS.items():
        op = ">=" if k == "cycles_per_s" else "<="
        print(f"target {k} {op} {v:g}: {result[k]:.2f} -> {'MET' if met[k] else 'MISSED'}")
    result |= {
        "targets_met": met,
        "replicas": args.replicas,
        "service_processes": args.replicas,
        "workers": args.workers,
        "users": args.users,
        "appendonly": not args.no_aof,
        "appendfsync": args.appendfsync,
        "requests_per_cycle": 3 if args.separate else 2,
        "machine": {
            "cpus": os.cpu_count(),
            "cpu": platform.processor() or _cpu_model(),
            "python": platform.python_version(),
            "redis": _redis_version(),
        },
    }
    print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in result.items()}))


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def _redis_version() -> str:
    with contextlib.suppress(Exception):
        from services.local_redis import find_server_binary

        out = subprocess.run(
            [find_server_binary(), "--version"], capture_output=True, text=True
        ).stdout
        return out.split()[2].removeprefix("v=")
    return "unknown"


if __name__ == "__main__":
    main()
