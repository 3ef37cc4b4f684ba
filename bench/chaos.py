"""Chaos run of the queue (issue 13): N jobs go through several stand-in worker processes while
a worker process, the queue service and Redis are each killed (SIGKILL) and started again.

    uv run python -m bench.chaos [--jobs 1000] [--workers 4]

Redis runs with AOF and `appendfsync always` and comes back on the same data directory and port,
so every write it acknowledged survives; the service comes back on the same port; the killed
worker process is replaced by a fresh one (a new registration, as a rebooted machine would).

The stand-in worker (`python -m bench.chaos worker ...`, one process each) leases one job at a
time, "works" `--work-s`, completes it, retries what the network refused and registers again
when the queue says it does not know it. It prints one JSON line per lease and per accepted
(204) complete, which is how the controller sees who holds what.

Counted at the end, from the queue's own job listing (admin, every page):

- lost: a submit the queue acknowledged (201) whose job is not there any more;
- duplicated: a job whose completion was accepted twice, or one submit that became two jobs
  (every submit carries a marker in its workflow; a submit is retried only when it surely did
  not reach the queue: connection refused, or 503 "unavailable");
- stuck: a job not final once `--settle-s` passed after the last chaos event and submit;
- requeue_after_kill_s: from the SIGKILL of a worker holding a job to another worker leasing
  that job (lease time to live + reaper interval, by design);
- failed: jobs that ended failed (attempts spent), not lost but said.

Ends with exactly one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.queue import ADMIN_PASSWORD, OUTPUTS, queue_env, sd15_workflow  # noqa: E402
from services.contracts import WORKER_TOKEN_PREFIX, JobState  # noqa: E402
from services.local_redis import LocalRedis, free_port  # noqa: E402


def note(*parts: Any) -> None:
    """Progress on stderr (the JSON line stays alone on stdout)."""
    print(time.strftime("%H:%M:%S"), *parts, file=sys.stderr, flush=True)


FINAL = {JobState.SUCCEEDED.value, JobState.FAILED.value, JobState.CANCELLED.value}
#: Short leases so a killed worker's job comes back within seconds.
LEASE_TTL_S = 2.0
REAP_INTERVAL_S = 0.2
NOT_REGISTERED = "is not registered"  # the queue's 403 (services/queue/api/workers.py)


# --------------------------------------------------------------------------- the worker
def worker_main(url: str, name: str, token: str, work_s: float) -> None:
    """One stand-in worker process: register, then lease -> work -> complete for ever."""
    http = httpx.Client(base_url=url, timeout=10, headers={"Authorization": f"Bearer {token}"})

    def emit(**line: Any) -> None:
        sys.stdout.write(json.dumps({**line, "t": time.time()}) + "\n")
        sys.stdout.flush()

    def call(path: str, body: dict[str, Any]) -> httpx.Response | None:
        """None when the queue could not be reached or answered 5xx: the caller retries."""
        try:
            r = http.post(path, json=body)
        except httpx.HTTPError:
            time.sleep(0.1)
            return None
        if r.status_code >= 500:
            time.sleep(0.1)
            return None
        return r

    def register() -> str:
        while True:
            r = call("/api/worker/register", {"gpu": "chaos", "provider": "bench"})
            if r is not None and r.status_code == 200:
                worker_id = str(r.json()["worker_id"])
                emit(ev="registered", worker=worker_id)
                return worker_id

    worker_id = register()
    while True:
        r = call("/api/worker/lease", {"worker_id": worker_id, "wait_s": 1.0})
        if r is None:
            continue
        if r.status_code == 403 and NOT_REGISTERED in r.text:
            worker_id = register()
            continue
        if r.status_code != 200:
            emit(ev="refused", status=r.status_code, body=r.text[:200])
            time.sleep(0.5)
            continue
        lease = r.json().get("lease")
        if lease is None:
            continue
        job_id = lease["job"]["id"]
        emit(ev="lease", job=job_id, worker=worker_id)
        time.sleep(work_s)
        body = {"worker_id": worker_id, "lease_id": lease["lease_id"], "outputs": OUTPUTS}
        while True:
            r = call(f"/api/worker/jobs/{job_id}/complete", body)
            if r is None:
                continue
            if r.status_code == 204:
                emit(ev="done", job=job_id, worker=worker_id)
            else:  # 409: the lease expired meanwhile (the job is someone else's now)
                emit(ev="dropped", job=job_id, status=r.status_code)
            break


# --------------------------------------------------------------------------- the controller
@dataclass
class Fleet:
    """The processes under test and what their workers said."""

    tmp: Path
    redis: LocalRedis
    service_port: int
    env: dict[str, str]
    work_s: float
    tokens: dict[str, str]
    service: subprocess.Popen[bytes] | None = None
    workers: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)
    readers: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    held: dict[str, str | None] = field(default_factory=dict)  # worker name -> job held
    leases: dict[str, list[tuple[str, float]]] = field(default_factory=dict)  # job -> (who, t)
    done: dict[str, int] = field(default_factory=dict)  # job -> accepted completes
    refused: list[dict[str, Any]] = field(default_factory=list)
    #: One event per waiter, all set on each line (a shared event one waiter clears would
    #: leave the others sleeping until their timeout).
    waiters: set[asyncio.Event] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.service_port}"

    def start_service(self) -> None:
        cmd = [
            sys.executable, "-m", "uvicorn", "services.queue.app:create_app", "--factory",
            "--host", "127.0.0.1", "--port", str(self.service_port), "--no-access-log",
            "--log-level", "warning",
        ]  # fmt: skip
        self.service = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            if self.service.poll() is not None:
                raise RuntimeError(f"the service exited with {self.service.returncode}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(self.url + "/api/ready", timeout=1) as r,  # noqa: S310
            ):
                if r.status == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError("the service did not get ready")
            time.sleep(0.05)

    def kill_service(self) -> None:
        assert self.service is not None
        self.service.kill()
        self.service.wait()

    async def start_worker(self, name: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.chaos", "worker", "--url", self.url, "--name", name,
            "--token", self.tokens[name], "--work-s", str(self.work_s),
            cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        self.workers[name] = proc
        self.held[name] = None
        self.readers[name] = asyncio.create_task(self._read(name, proc))

    async def _read(self, name: str, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = json.loads(raw)
            ev = line["ev"]
            if ev == "lease":
                self.held[name] = line["job"]
                self.leases.setdefault(line["job"], []).append((name, line["t"]))
            elif ev in ("done", "dropped"):
                self.held[name] = None
                if ev == "done":
                    self.done[line["job"]] = self.done.get(line["job"], 0) + 1
            elif ev == "refused":
                self.refused.append(line)
            for waiter in self.waiters:
                waiter.set()

    async def kill_worker(self, name: str) -> None:
        """SIGKILL, then read what it wrote before dying (a job it completed just then)."""
        proc = self.workers.pop(name)
        proc.kill()
        await proc.wait()
        await self.readers.pop(name)

    async def stop(self) -> None:
        for proc in self.workers.values():
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        for task in self.readers.values():
            task.cancel()
        if self.service is not None and self.service.poll() is None:
            self.service.send_signal(signal.SIGTERM)
            try:
                self.service.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.service.kill()
        self.redis.stop()


def make_fleet(tmp: Path, n_workers: int, users: list[str], work_s: float) -> Fleet:
    from services.queue.auth import hash_password

    redis = LocalRedis(data_dir=tmp / "redis", appendonly=True, appendfsync="always").start()
    one_hash = hash_password("chaos-password")
    tokens = {f"cw{i}": f"{WORKER_TOKEN_PREFIX}chaos-token-{i}" for i in range(2 * n_workers)}
    env = queue_env(
        redis.url, users, one_hash, tokens,
        QUEUE_LEASE_TTL_S=str(LEASE_TTL_S), QUEUE_REAP_INTERVAL_S=str(REAP_INTERVAL_S),
    )
    return Fleet(tmp, redis, free_port(), env, work_s, tokens)


class Submitter:
    """Submits `n` marked jobs round-robin over the users; retries only what surely did not
    reach the queue."""

    def __init__(
        self, fleet: Fleet, tokens: dict[str, str], n: int, concurrency: int, backlog: int
    ) -> None:
        self.fleet, self.tokens, self.n, self.concurrency = fleet, tokens, n, concurrency
        self.backlog = backlog  # submitted ahead of the completions: chaos meets submits too
        self.acked: dict[str, str] = {}  # job id -> marker
        self.unanswered: list[str] = []  # markers whose answer never came (may exist)
        self.retries = 0
        self.next = 0

    def body(self, marker: str) -> dict[str, Any]:
        workflow = sd15_workflow()
        workflow = {**workflow, "6": {**workflow["6"], "inputs": {
            **workflow["6"]["inputs"], "text": marker}}}  # fmt: skip
        return {"workflow": workflow, "client_id": "chaos"}

    async def run(self, http: httpx.AsyncClient) -> None:
        users = list(self.tokens)

        async def one_loop() -> None:
            while self.next < self.n:
                await wait_for(self.fleet, lambda: self.next - len(self.fleet.done) < self.backlog,
                               60)  # fmt: skip
                if self.next >= self.n:
                    break
                i = self.next
                self.next += 1
                marker = f"chaos-{i}"
                user = users[i % len(users)]
                headers = {"Authorization": f"Bearer {self.tokens[user]}"}
                while True:
                    try:
                        r = await http.post(
                            "/api/jobs", json=self.body(marker), headers=headers
                        )
                    except httpx.ConnectError:  # refused: never sent
                        self.retries += 1
                        await asyncio.sleep(0.1)
                        continue
                    except httpx.HTTPError:  # sent, no answer: it may or may not exist
                        self.unanswered.append(marker)
                        break
                    if r.status_code == 503:
                        self.retries += 1
                        await asyncio.sleep(0.1)
                        continue
                    if r.status_code != 201:
                        raise RuntimeError(f"submit: {r.status_code} {r.text[:200]}")
                    self.acked[r.json()["id"]] = marker
                    break

        await asyncio.gather(*(one_loop() for _ in range(self.concurrency)))


async def login(http: httpx.AsyncClient, user: str, password: str) -> str:
    r = await http.post("/api/auth/token", json={"username": user, "password": password})
    r.raise_for_status()
    return str(r.json()["access_token"])


async def all_jobs(http: httpx.AsyncClient, admin: str) -> list[dict[str, Any]]:
    """Every job the queue knows, with workflows (for the markers), page by page."""
    out: list[dict[str, Any]] = []
    unavailable = 0
    while True:
        r = await http.get(
            "/api/jobs",
            params={"state": "all", "limit": 500, "offset": len(out), "workflow": "true"},
            headers={"Authorization": f"Bearer {admin}"},
        )
        if r.status_code == 503 and unavailable < 50:  # pooled connections of the old Redis
            unavailable += 1
            await asyncio.sleep(0.2)
            continue
        r.raise_for_status()
        page = r.json()
        out.extend(page)
        if len(page) < 500:
            return out


async def wait_for(fleet: Fleet, predicate: Any, timeout_s: float) -> bool:
    """Wait (on the workers' lines) until `predicate()`; False at the timeout."""
    deadline = time.monotonic() + timeout_s
    changed = asyncio.Event()
    fleet.waiters.add(changed)
    try:
        while not predicate():
            changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), min(left, 0.5))
        return True
    finally:
        fleet.waiters.discard(changed)


async def chaos(
    fleet: Fleet, http: httpx.AsyncClient, admin: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Kill a worker holding a job, then the service, then Redis, each at a share of the
    submits; start each again."""
    out: dict[str, Any] = {"requeue_after_kill_s": None, "killed": []}

    def completed() -> int:
        return len(fleet.done)

    # 1. A worker process holding a job.
    await wait_for(fleet, lambda: completed() >= args.jobs * 0.15, 120)
    for _ in range(10):
        await wait_for(
            fleet, lambda: any(fleet.held[n] for n in fleet.workers) or completed() >= args.jobs,
            30,
        )  # fmt: skip
        victim = next((n for n in fleet.workers if fleet.held[n]), None)
        if victim is None:
            break  # every job done already: nothing left to hold
        job = fleet.held[victim]
        t_kill = time.time()
        await fleet.kill_worker(victim)
        note("killed worker", victim, "holding", job, "done:", fleet.done.get(job or ""))
        spare = next(n for n in fleet.tokens if n not in fleet.workers and n != victim)
        await fleet.start_worker(spare)
        out["killed"].append(f"worker {victim}")
        if job is None or fleet.done.get(job):
            continue  # it finished just before the kill: try another
        def leased_elsewhere(job: str = job, victim: str = victim) -> bool:
            return any(w != victim for w, _ in fleet.leases.get(job, []))

        if await wait_for(fleet, leased_elsewhere, LEASE_TTL_S + 10):
            t_again = min(t for w, t in fleet.leases[job] if w != victim)
            out["requeue_after_kill_s"] = t_again - t_kill
            break
        r = await http.get(f"/api/jobs/{job}", headers={"Authorization": f"Bearer {admin}"})
        note("not leased again:", r.status_code, r.text[:300])
        if r.status_code == 200 and r.json()["state"] == JobState.SUCCEEDED.value:
            continue  # killed after its complete reached the queue, before it said so
        break  # not leased again, not done: it shows up as stuck at the end

    # 2. The queue service.
    await wait_for(fleet, lambda: completed() >= args.jobs * 0.4, 120)
    note("killing the service at", completed(), "completed")
    fleet.kill_service()
    t = time.monotonic()
    await asyncio.to_thread(fleet.start_service)
    out["service_down_s"] = time.monotonic() - t
    out["killed"].append("service")

    # 3. Redis (AOF, fsync always), back on the same data directory and port.
    await wait_for(fleet, lambda: completed() >= args.jobs * 0.65, 120)
    note("killing redis at", completed(), "completed")
    fleet.redis.kill()
    t = time.monotonic()
    await asyncio.to_thread(fleet.redis.start)
    out["redis_down_s"] = time.monotonic() - t
    out["killed"].append("redis")
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    users = [f"chaos-u{i}" for i in range(args.users)]
    with tempfile.TemporaryDirectory(prefix="queue-chaos-") as tmp:
        fleet = make_fleet(Path(tmp), args.workers, users, args.work_s)
        try:
            await asyncio.to_thread(fleet.start_service)
            t0 = time.monotonic()
            async with httpx.AsyncClient(base_url=fleet.url, timeout=30) as http:
                tokens = {u: await login(http, u, "chaos-password") for u in users}
                admin = await login(http, "admin", ADMIN_PASSWORD)
                for i in range(args.workers):
                    await fleet.start_worker(f"cw{i}")
                sub = Submitter(fleet, tokens, args.jobs, args.submitters, args.backlog)
                submitting = asyncio.create_task(sub.run(http))
                events = await chaos(fleet, http, admin, args)
                await submitting
                # Settle: every job the queue took either ends or is stuck.
                jobs: list[dict[str, Any]] = []
                deadline = time.monotonic() + args.settle_s
                while True:
                    jobs = await all_jobs(http, admin)
                    if all(j["state"] in FINAL for j in jobs) or time.monotonic() > deadline:
                        break
                    await wait_for(fleet, lambda: False, 0.3)
            elapsed = time.monotonic() - t0
        finally:
            await fleet.stop()
    by_id = {j["id"]: j for j in jobs}
    markers: dict[str, int] = {}
    for j in jobs:
        marker = j["workflow"]["6"]["inputs"]["text"]
        markers[marker] = markers.get(marker, 0) + 1
    lost = [i for i in sub.acked if i not in by_id]
    twice_done = [i for i, n in fleet.done.items() if n > 1]
    twice_submitted = [m for m, n in markers.items() if n > 1]
    stuck = [i for i, j in by_id.items() if j["state"] not in FINAL]
    return {
        "jobs": args.jobs,
        "acknowledged": len(sub.acked),
        "submits_unanswered": len(sub.unanswered),
        "unanswered_that_exist": sum(1 for m in sub.unanswered if m in markers),
        "submit_retries": sub.retries,
        "lost": len(lost),
        "duplicated": len(twice_done) + len(twice_submitted),
        "stuck": len(stuck),
        "failed": sum(1 for j in jobs if j["state"] == JobState.FAILED.value),
        "succeeded": sum(1 for j in jobs if j["state"] == JobState.SUCCEEDED.value),
        "leased_more_than_once": sum(1 for v in fleet.leases.values() if len(v) > 1),
        "worker_refusals": len(fleet.refused),
        "examples": {
            "lost": lost[:3], "twice_done": twice_done[:3],
            "twice_submitted": twice_submitted[:3], "stuck": stuck[:3],
        },
        **events,
        "elapsed_s": elapsed,
        "workers": args.workers,
        "lease_ttl_s": LEASE_TTL_S,
        "appendfsync": "always",
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        wp = argparse.ArgumentParser(prog="bench.chaos worker")
        wp.add_argument("--url", required=True)
        wp.add_argument("--name", required=True)
        wp.add_argument("--token", required=True)
        wp.add_argument("--work-s", type=float, default=0.05)
        wa = wp.parse_args(sys.argv[2:])
        with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
            worker_main(wa.url, wa.name, wa.token, wa.work_s)
        return
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=4, help="stand-in worker processes")
    ap.add_argument("--users", type=int, default=4)
    ap.add_argument("--submitters", type=int, default=4, help="concurrent submit loops")
    ap.add_argument("--backlog", type=int, default=24, help="jobs submitted ahead")
    ap.add_argument("--work-s", type=float, default=0.05, help="each job's pretend GPU time")
    ap.add_argument("--settle-s", type=float, default=30.0, help="wait for the last jobs")
    args = ap.parse_args()
    result = asyncio.run(run(args))
    ok = result["lost"] == result["duplicated"] == result["stuck"] == 0
    print(
        f"chaos: {result['jobs']} jobs, lost {result['lost']}, duplicated "
        f"{result['duplicated']}, stuck {result['stuck']}, requeue after kill "
        f"{result['requeue_after_kill_s']} s -> {'OK' if ok else 'FAILED'}",
        flush=True,
    )
    print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in result.items()}))


if __name__ == "__main__":
    main()
