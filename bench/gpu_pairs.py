"""GPU benchmark: img/min for 1, 2 and 4 ComfyUI + worker pairs on one GPU, through the real queue.

    COMFYUI_DIR=/opt/ComfyUI uv run python -m bench.gpu_pairs [--pairs 1 2 4] [--jobs-per-pair 40]
    uv run python -m bench.gpu_pairs --dry-run        # the same flow against the ComfyUI double

Needs a ComfyUI checkout (`COMFYUI_DIR` or `--comfyui-dir`, the folder holding `main.py`), a
CUDA GPU (`nvidia-smi` lists one) and an SD1.5 checkpoint in `<COMFYUI_DIR>/models/checkpoints`
(or `--extra-model-paths`); without them it exits 2 with one line saying what is missing.

Real processes over loopback, as deployed on a GPU host: a private Redis and the queue service
(uvicorn, as `bench.queue` starts them), then for each P in `--pairs`: P worker processes
(`python -m services.worker`), each managing its own ComfyUI (`WORKER_COMFYUI_DIR`,
`--cuda-device 0`, `OMP_NUM_THREADS=MKL_NUM_THREADS=2`: ../shared/comfyui/GPU.md), with its own
port and output/temp/input folders. Per P:

1. cold: from each worker's process start to its ComfyUI up (the worker registers with
   `comfyui.up`, polled every 50 ms), then one job per worker: its first image (weights to
   the GPU, CUDA start-up);
2. warm: `--jobs-per-pair` x P distinct SD1.5 txt2img jobs (512x512, 20 steps, euler; the
   graph of trace 10 with the catalogue's checkpoint, checked against the pool's catalogue
   before submitting) from `--users` participants, submitted at once; img/min at steady
   state from the queue's own `finished_at` timestamps with the first and last 10 % of
   completions left out (ramp up and down), and over the whole run; ComfyUI's own time per
   image (`gpu_ms`); GPU utilisation from `nvidia-smi` sampled every 250 ms (null without it).

Ends with one JSON line: `{"pairs": {"1": {...}, "2": {...}, "4": {...}}, ...}`. Exit 1 when any
job failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

if TYPE_CHECKING:
    import httpx

    from bench.queue import Services
# bench.queue, httpx and the services are imported where used: a host that cannot run the
# benchmark is told so at once, not after a second of imports.

#: The double started as a ComfyUI checkout (`WORKER_COMFYUI_DIR`) in --dry-run.
FAKE_CHECKOUT = ROOT / "tests" / "comfyui_double" / "fake_checkout"
DRY_CHECKPOINT = "random-sd15.safetensors"
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
#: OMP/MKL threads per ComfyUI (GPU.md: 2 keeps four processes from fighting over cores).
THREADS = 2
NEEDS = (
    "bench.gpu_pairs needs COMFYUI_DIR (or --comfyui-dir: a ComfyUI checkout holding main.py), "
    "a CUDA GPU (nvidia-smi listing one) and an SD1.5 checkpoint in "
    "<COMFYUI_DIR>/models/checkpoints (or --extra-model-paths); --dry-run runs against the "
    "ComfyUI double instead"
)


# --------------------------------------------------------------------------- pure parts
def cuda_gpus(run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run) -> list[str]:
    """The GPUs `nvidia-smi -L` lists ("GPU 0: NVIDIA H100 80GB HBM3 (UUID: ...)"), [] when
    there is no nvidia-smi or it cannot talk to a driver."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.startswith("GPU ")]


def refusal(
    comfyui_dir: Path | None,
    extra_model_paths: Path | None,
    gpus: Callable[[], list[str]] = cuda_gpus,
) -> str | None:
    """Why this host cannot run the benchmark (one line), or None when it can."""
    if comfyui_dir is None:
        return f"{NEEDS} (COMFYUI_DIR is not set)"
    if not (comfyui_dir / "main.py").is_file():
        return f"{NEEDS} ({comfyui_dir} holds no main.py)"
    if not gpus():
        return f"{NEEDS} (no CUDA GPU: nvidia-smi is missing or lists none)"
    if extra_model_paths is None:
        folder = comfyui_dir / "models" / "checkpoints"
        found = folder.is_dir() and any(
            p.suffix in CHECKPOINT_SUFFIXES for p in folder.rglob("*") if p.is_file()
        )
        if not found:
            return f"{NEEDS} (no checkpoint in {folder})"
    if extra_model_paths is not None and not extra_model_paths.is_file():
        return f"{NEEDS} ({extra_model_paths} does not exist)"
    return None


def checkpoints(catalog: Mapping[str, Any]) -> list[str]:
    """The checkpoint names the catalogue's CheckpointLoaderSimple offers."""
    try:
        spec = catalog["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"]
    except (KeyError, TypeError):
        return []
    options = spec[0]
    if isinstance(options, str) and options == "COMBO":  # the newer combo spelling
        options = spec[1].get("options", []) if len(spec) > 1 else []
    return [o for o in options if isinstance(o, str)]


def build_workload(
    catalog: Mapping[str, Any],
    jobs: int,
    users: Sequence[str],
    *,
    checkpoint: str | None = None,
    size: int = 512,
    steps: int = 20,
    seed0: int = 0,
) -> list[tuple[str, dict[str, Any]]]:
    """`jobs` (participant, graph) pairs, round robin over `users`: trace 10's SD1.5 txt2img
    graph at `size`² and `steps` euler steps with a distinct seed each (ComfyUI would answer a
    repeated graph from its cache), every graph valid against `catalog` (ValueError if not:
    the checkpoint must be one the pool has)."""
    from bench.queue import sd15_workflow
    from services.comfy.validation import validate_prompt

    names = checkpoints(catalog)
    if checkpoint is None:
        if not names:
            raise ValueError("the catalogue offers no checkpoint (CheckpointLoaderSimple)")
        checkpoint = names[0]
    elif checkpoint not in names:
        raise ValueError(f"checkpoint {checkpoint!r} is not in the catalogue: {names}")
    if not users:
        raise ValueError("no participants")
    base = sd15_workflow()
    out = []
    for i in range(jobs):
        graph = copy.deepcopy(base)
        for node in graph.values():
            inputs = node["inputs"]
            if node["class_type"] == "CheckpointLoaderSimple":
                inputs["ckpt_name"] = checkpoint
            elif node["class_type"] == "EmptyLatentImage":
                inputs.update(width=size, height=size, batch_size=1)
            elif node["class_type"] == "KSampler":
                inputs.update(seed=seed0 + i, steps=steps, sampler_name="euler")
            elif node["class_type"] == "SaveImage":
                inputs["filename_prefix"] = "gpu_bench"
        result = validate_prompt(copy.deepcopy(graph), dict(catalog), tracebacks=False)
        if not result.ok:
            raise ValueError(f"the workload graph is not valid: {result.error_body()}")
        out.append((users[i % len(users)], graph))
    return out


def img_per_min(finished_ms: Iterable[float], trim: float = 0.1) -> float | None:
    """Images per minute at steady state from completion timestamps (ms): the first and the
    last `trim` of completions are left out (workers starting, the queue running dry), then
    (completions - 1) per the span between the first and the last kept. None when fewer
    than two completions are kept or they share one instant."""
    ts = sorted(finished_ms)
    k = int(len(ts) * trim)
    kept = ts[k : len(ts) - k]
    if len(kept) < 2 or kept[-1] <= kept[0]:
        return None
    return (len(kept) - 1) / ((kept[-1] - kept[0]) / 60_000)


def parse_smi(line: str) -> tuple[float, float] | None:
    """(utilisation %, memory used MiB) from one line of `nvidia-smi --query-gpu=
    utilization.gpu,memory.used --format=csv,noheader,nounits`, None for anything else
    ("[N/A]", a blank line, an error message)."""
    parts = [p.strip() for p in line.split(",")]
    if len(parts) != 2:
        return None
    try:
        return float(parts[0]), float(parts[1])
    except ValueError:
        return None


# --------------------------------------------------------------------------- GPU sampling
class GpuSampler:
    """`nvidia-smi` every 250 ms on GPU 0 while running; nothing when there is none."""

    def __init__(self, device: int = 0) -> None:
        self.samples: list[tuple[float, float, float]] = []  # (unix s, util %, MiB)
        self.device = device
        self.proc: subprocess.Popen[str] | None = None
        self.reader: threading.Thread | None = None

    def start(self) -> None:
        if shutil.which("nvidia-smi") is None:
            return
        self.proc = subprocess.Popen(
            ["nvidia-smi", "-i", str(self.device), "--query-gpu=utilization.gpu,memory.used",
             "--format=csv,noheader,nounits", "-lms", "250"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            parsed = parse_smi(line)
            if parsed is not None:
                self.samples.append((time.time(), *parsed))

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
            if self.reader is not None:
                self.reader.join(timeout=5)

    def summary(self, start_s: float, end_s: float) -> dict[str, float | None]:
        util = [u for t, u, _ in self.samples if start_s <= t <= end_s]
        mem = [m for t, _, m in self.samples if start_s <= t <= end_s]
        return {
            "gpu_util_mean_pct": round(statistics.fmean(util), 1) if util else None,
            "gpu_util_median_pct": round(statistics.median(util), 1) if util else None,
            "gpu_mem_max_mib": max(mem) if mem else None,
            "gpu_samples": len(util),
        }


# --------------------------------------------------------------------------- processes
@dataclass
class Config:
    comfyui_dir: Path
    dry_run: bool
    extra_model_paths: Path | None
    checkpoint: str | None
    size: int
    steps: int
    users: int
    jobs_per_pair: int
    job_time_s: float
    ready_timeout_s: float


@dataclass
class Pair:
    """One worker process and the ComfyUI it manages."""

    worker_id: str
    proc: subprocess.Popen[bytes]
    started_s: float
    ready_s: float | None = None
    log: Path = field(default_factory=Path)


def start_pairs(svc: Services, n: int, cfg: Config, tmp: Path) -> list[Pair]:
    from services.local_redis import free_port

    pairs = []
    for i, (name, token) in enumerate(list(svc.workers.items())[:n]):
        instance = f"p{n}-{i}"
        own = tmp / instance
        dirs = {d: own / d for d in ("output", "temp", "input")}
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        args = " ".join(f"--{d}-directory {path}" for d, path in dirs.items())
        env = {
            **os.environ, "WORKER_QUEUE_URL": svc.urls[0], "WORKER_TOKEN": token,
            "WORKER_INSTANCE": instance, "WORKER_COMFYUI_DIR": str(cfg.comfyui_dir),
            "WORKER_COMFYUI_PORT": str(free_port()), "WORKER_CUDA_DEVICE": "0",
            "WORKER_COMFYUI_THREADS": str(THREADS), "WORKER_COMFYUI_ARGS": args,
            "WORKER_STORAGE__DIR": str(tmp / "files"), "WORKER_LOG_LEVEL": "WARNING",
            "WORKER_PROVIDER": "bench",
            # An idle worker answers SIGTERM only when its lease long-poll returns (20 s by
            # default); a short one ends each P sooner and changes nothing while jobs wait.
            "WORKER_LEASE_WAIT_S": "1",
        }  # fmt: skip
        if cfg.extra_model_paths is not None:
            env["WORKER_EXTRA_MODEL_PATHS"] = str(cfg.extra_model_paths)
        if cfg.dry_run:
            env.update(COMFY_DOUBLE_JOB_TIME_S=str(cfg.job_time_s),
                       COMFY_DOUBLE_MODELS=json.dumps({"checkpoints": [DRY_CHECKPOINT]}),
                       COMFY_DOUBLE_ROOT=str(own / "double"))  # fmt: skip
        log = own / "worker.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "services.worker"], cwd=ROOT, env=env,
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        pairs.append(Pair(f"{name}/{instance}", proc, time.time(), log=log))
    return pairs


def stop_pairs(pairs: list[Pair]) -> None:
    """SIGTERM: each worker stops its ComfyUI and deregisters."""
    for p in pairs:
        if p.proc.poll() is None:
            p.proc.send_signal(signal.SIGTERM)
    for p in pairs:
        try:
            p.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.proc.kill()
            p.proc.wait()


def _tail(path: Path, n: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    return ""


async def wait_ready(http: httpx.AsyncClient, pairs: list[Pair], timeout_s: float) -> None:
    """Each pair's `ready_s`: the first poll (every 50 ms) that shows its ComfyUI up."""
    async with asyncio.timeout(timeout_s):
        while any(p.ready_s is None for p in pairs):
            workers = {w["id"]: w for w in (await http.get("/api/admin/workers")).json()}
            now = time.time()
            for p in pairs:
                if p.proc.poll() is not None:
                    raise RuntimeError(f"worker {p.worker_id} exited:\n{_tail(p.log)}")
                info = workers.get(p.worker_id, {}).get("info", {})
                if p.ready_s is None and info.get("comfyui", {}).get("up"):
                    p.ready_s = now
            await asyncio.sleep(0.05)  # state in other processes, looked at every 50 ms


async def wait_catalog(http: httpx.AsyncClient, timeout_s: float) -> dict[str, Any]:
    """The pool's node catalogue once it offers a checkpoint: a worker registers with ComfyUI
    up first and sends its catalogue right after, so the two are not at once."""
    async with asyncio.timeout(timeout_s):
        while True:
            r = await http.get("/api/catalog")
            if r.status_code == 200 and checkpoints(r.json()):
                return dict(r.json())
            await asyncio.sleep(0.05)  # the catalogue arrives from another process


@dataclass
class Client:
    """The bench's view of the queue: admin HTTP, participants' tokens, the event stream."""

    http: httpx.AsyncClient
    tokens: dict[str, str]
    ws: Any

    async def submit(self, work: list[tuple[str, dict[str, Any]]]) -> list[str]:
        async def one(user: str, graph: dict[str, Any]) -> str:
            auth = {"Authorization": f"Bearer {self.tokens[user]}"}
            r = await self.http.post("/api/jobs", json={"workflow": graph}, headers=auth)
            r.raise_for_status()
            return str(r.json()["id"])

        return list(await asyncio.gather(*(one(u, g) for u, g in work)))

    async def until_ended(self, ids: list[str], timeout_s: float) -> dict[str, str]:
        import orjson

        wanted, ended = set(ids), {}
        async with asyncio.timeout(timeout_s):
            while len(ended) < len(wanted):
                event = orjson.loads(await self.ws.recv())
                if event["job"] in wanted and event["type"] in ("succeeded", "failed", "cancelled"):
                    ended[event["job"]] = event["type"]
        return ended

    async def jobs(self, ids: list[str]) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(self._job(i) for i in ids)))

    async def _job(self, job_id: str) -> dict[str, Any]:
        r = await self.http.get(f"/api/jobs/{job_id}")
        r.raise_for_status()
        return dict(r.json())


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


async def measure(client: Client, svc: Services, n: int, cfg: Config) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix=f"gpu-bench-p{n}-"))
    pairs = start_pairs(svc, n, cfg, tmp)
    sampler = GpuSampler()
    sampler.start()
    try:
        await wait_ready(client.http, pairs, cfg.ready_timeout_s)
        catalog = await wait_catalog(client.http, cfg.ready_timeout_s)
        users = list(client.tokens)
        per_image_s = 600 if not cfg.dry_run else 30
        # Cold: one job per worker, all idle in a long-poll (the queue wakes idle ones first).
        cold_submit = time.time()
        cold_work = build_workload(catalog, n, users, checkpoint=cfg.checkpoint, size=cfg.size,
                                   steps=cfg.steps, seed0=n * 1_000_000)  # fmt: skip
        cold_ids = await client.submit(cold_work)
        cold_end = await client.until_ended(cold_ids, per_image_s + 60)
        cold_jobs = await client.jobs(cold_ids)
        first_ms: dict[str, float] = {}
        for job in cold_jobs:
            if job["state"] == "succeeded" and job.get("worker"):
                first_ms[job["worker"]] = min(first_ms.get(job["worker"], 1e18), job["finished_at"])
        cold = []
        for p in pairs:
            first = first_ms.get(p.worker_id)
            ready = p.ready_s or p.started_s
            cold.append({
                "worker": p.worker_id,
                "launch_to_ready_s": _round(ready - p.started_s),
                "first_prompt_s": _round(first / 1000 - cold_submit) if first else None,
                "launch_to_first_image_s": _round(first / 1000 - p.started_s) if first else None,
            })  # fmt: skip
        # Warm: the steady workload, submitted at once.
        jobs = cfg.jobs_per_pair * n
        work = build_workload(catalog, jobs, users, checkpoint=cfg.checkpoint, size=cfg.size,
                              steps=cfg.steps, seed0=n * 1_000_000 + n)  # fmt: skip
        started = time.time()
        ids = await client.submit(work)
        ended = await client.until_ended(ids, jobs * per_image_s / n + 120)
        wall = time.time() - started
        records = await client.jobs(ids)
    finally:
        sampler.stop()
        stop_pairs(pairs)
    ok = [j for j in records if j["state"] == "succeeded"]
    finished = [float(j["finished_at"]) for j in ok]
    gpu_s = [j["gpu_ms"] / 1000 for j in ok if j.get("gpu_ms") is not None]
    per_worker: dict[str, int] = {}
    for j in ok:
        per_worker[j["worker"]] = per_worker.get(j["worker"], 0) + 1
    steady = img_per_min(finished)
    k = int(len(finished) * 0.1)
    window = sorted(finished)[k : len(finished) - k] or [started * 1000, time.time() * 1000]
    return {
        "pairs": n,
        "jobs": jobs,
        "succeeded": len(ok),
        "failed": sum(1 for s in ended.values() if s != "succeeded")
        + sum(1 for s in cold_end.values() if s != "succeeded"),
        "img_per_min_steady": _round(steady, 1),
        "img_per_min_wall": round(len(ok) / wall * 60, 1),
        "wall_s": round(wall, 2),
        "warm_s_per_image_median": _round(statistics.median(gpu_s) if gpu_s else None, 3),
        "images_per_worker": per_worker,
        "cold": cold,
        "cold_launch_to_ready_s_max": max(
            (c["launch_to_ready_s"] for c in cold if c["launch_to_ready_s"] is not None),
            default=None,
        ),
        "cold_first_prompt_s_max": max(
            (c["first_prompt_s"] for c in cold if c["first_prompt_s"] is not None), default=None
        ),
        **sampler.summary(window[0] / 1000, window[-1] / 1000),
    }


async def run(cfg: Config, pair_counts: list[int]) -> dict[str, Any]:
    import httpx
    from websockets.asyncio.client import connect

    from bench.queue import ADMIN_PASSWORD, start_services

    svc = start_services(replicas=1, n_users=cfg.users, n_workers=max(pair_counts),
                         appendonly=True)  # fmt: skip
    try:
        async with httpx.AsyncClient(base_url=svc.urls[0], timeout=120) as http:
            login = {"username": "admin", "password": ADMIN_PASSWORD}
            admin_token = (await http.post("/api/auth/token", json=login)).json()["access_token"]
            http.headers["Authorization"] = f"Bearer {admin_token}"
            tokens = {}
            for user, password in svc.users.items():
                r = await http.post("/api/auth/token",
                                    json={"username": user, "password": password})  # fmt: skip
                tokens[user] = r.json()["access_token"]
            ws_url = "ws" + svc.urls[0].removeprefix("http") + "/api/events"
            admin = {"Authorization": f"Bearer {admin_token}"}
            async with connect(ws_url, additional_headers=admin, max_size=None) as ws:
                client = Client(http, tokens, ws)
                results = {}
                for n in pair_counts:
                    results[str(n)] = await measure(client, svc, n, cfg)
                    print(f"P={n}: {json.dumps(results[str(n)])}", file=sys.stderr, flush=True)
    finally:
        svc.stop()
    gpus = [] if cfg.dry_run else cuda_gpus()
    return {
        "dry_run": cfg.dry_run,
        "gpu": gpus[0] if gpus else None,
        "comfyui_dir": str(cfg.comfyui_dir),
        "size": cfg.size,
        "steps": cfg.steps,
        "threads_per_comfyui": THREADS,
        "pairs": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, nargs="+", default=None,
                        help="ComfyUI + worker pairs per GPU to measure (default 1 2 4; "
                        "--dry-run: 1 2)")  # fmt: skip
    parser.add_argument("--jobs-per-pair", type=int, default=None,
                        help="warm jobs per pair (default 40; --dry-run: 4)")  # fmt: skip
    parser.add_argument("--users", type=int, default=4, help="participants submitting")
    parser.add_argument("--comfyui-dir", type=Path, default=None, help="default $COMFYUI_DIR")
    parser.add_argument("--extra-model-paths", type=Path, default=None)
    parser.add_argument("--checkpoint", default=None, help="default: the catalogue's first")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--ready-timeout", type=float, default=300.0,
                        help="seconds for the ComfyUIs to come up")  # fmt: skip
    parser.add_argument("--dry-run", action="store_true",
                        help="the whole flow against the ComfyUI double (no GPU)")  # fmt: skip
    parser.add_argument("--job-time", type=float, default=0.1,
                        help="--dry-run: the double's seconds per prompt")  # fmt: skip
    args = parser.parse_args(argv)
    if args.dry_run:
        comfyui_dir = FAKE_CHECKOUT
    else:
        env_dir = os.environ.get("COMFYUI_DIR")
        comfyui_dir = args.comfyui_dir or (Path(env_dir) if env_dir else None)
        why = refusal(comfyui_dir, args.extra_model_paths)
        if why is not None:
            print(why, file=sys.stderr)
            return 2
        assert comfyui_dir is not None
    if any(n < 1 for n in args.pairs or [1]):
        parser.error("--pairs must be 1 or more")
    cfg = Config(
        comfyui_dir=comfyui_dir.resolve(),
        dry_run=args.dry_run,
        extra_model_paths=args.extra_model_paths,
        checkpoint=args.checkpoint,
        size=args.size,
        steps=args.steps,
        users=args.users,
        jobs_per_pair=args.jobs_per_pair or (4 if args.dry_run else 40),
        job_time_s=args.job_time,
        ready_timeout_s=60.0 if args.dry_run else args.ready_timeout,
    )
    pair_counts = args.pairs or ([1, 2] if args.dry_run else [1, 2, 4])
    out = asyncio.run(run(cfg, pair_counts))
    print(json.dumps(out))
    return 1 if any(r["failed"] for r in out["pairs"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
