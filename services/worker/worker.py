"""The worker: registration, leasing (with prefetch), the WebSocket, heartbeats, cancel,
shutdown, idle exit and the status file, around one ComfyUI.

Leasing keeps ComfyUI's queue one job ahead without ever holding a job a free GPU could run:
with nothing held the worker long-polls as idle; with one job held (running, or about to) it
long-polls with `prefetch`, which the queue refuses while any worker waits idle. The two polls
may be outstanding together for a moment (a job ended while the prefetch poll waited: the idle
poll's mark then blocks every prefetch, this worker's included).

Shutdown (SIGTERM: spot preemption, `docker stop`): no new polls; the prefetched job is handed
back at once; the running one gets `shutdown_grace_s`, then is handed back too; polls still
out are waited for (what they bring is handed back); the worker leaves the queue (`release`)
and stops a managed ComfyUI; the exit status is 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import time
from typing import Any

import structlog

from services.storage import DirStore, ObjectStore, open_store
from services.worker.catalog import NodeCatalog
from services.worker.comfy import ComfyClient, ComfyDown, ComfyError, Preview
from services.worker.queue import (
    LeaseLost,
    NotRegistered,
    QueueClient,
    QueueRefused,
    QueueUnavailable,
)
from services.worker.runner import ComfyGone, JobRun, Phase, Reconnected, Shared
from services.worker.settings import WorkerSettings
from services.worker.supervisor import Backoff, ComfySupervisor, ComfyWatch, pause

log = structlog.get_logger(__name__)


class Worker:
    """One worker process (one ComfyUI). `await Worker(settings).run()` until SIGTERM."""

    def __init__(self, settings: WorkerSettings, store: ObjectStore | None = None) -> None:
        self.settings = settings
        token = settings.token.get_secret_value()
        self.queue = QueueClient(settings.queue_url, token)
        # The WebSocket's clientId becomes the worker's id once registered.
        self.comfy = ComfyClient(settings.comfyui_base_url, client_id=f"worker-{os.getpid()}")
        self.watch: ComfyWatch = (
            ComfySupervisor(self.comfy, settings, self._changed)
            if settings.managed
            else ComfyWatch(self.comfy, self._changed)
        )
        self.store = store or open_store(settings.storage)
        self.runs: dict[str, JobRun] = {}
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._submitted: list[str] = []  # prompt ids in ComfyUI's order
        self.catalog = NodeCatalog()
        self.catalog_hash: str | None = None
        self.registered_generation = -1
        self.registrations = 0  # answered registrations: who re-registers after a 403 knows
        self._register_lock = asyncio.Lock()
        self.jobs_done = 0
        self.last_busy_at: float | None = None
        self.stopping = asyncio.Event()
        self.draining = False
        self.lease_ttl_s = 30.0
        self._wake = asyncio.Event()  # runs, ComfyUI or polls changed: the lease loop looks
        self._polls: dict[bool, asyncio.Task[None]] = {}  # prefetch flag -> outstanding poll
        self._idle_timer: asyncio.TimerHandle | None = None
        self._status_dirty = asyncio.Event()
        self._comfy_changed = asyncio.Event()
        self.shared = Shared(
            settings=settings, queue=self.queue, comfy=self.comfy, watch=self.watch,
            store=self.store, catalog=lambda: self.catalog, refresh_catalog=self.refresh_catalog,
            restart_comfy=self.watch.restart if isinstance(self.watch, ComfySupervisor) else None,
            is_head=self._is_head, on_phase=self._on_phase,
        )  # fmt: skip

    # -- the process ----------------------------------------------------------------------------
    async def run(self, handle_signals: bool = True) -> int:
        if handle_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop, sig.name)
        log.info("worker starting", queue=self.settings.queue_url,
                 comfyui=self.settings.comfyui_base_url, managed=self.settings.managed)  # fmt: skip
        await self.check_placement()
        status_writer = asyncio.create_task(self._status_writer(), name="status-file")
        await self.watch.start()
        await self._register_until_reachable()
        self.comfy.client_id = self.queue.worker_id
        background = [
            status_writer,
            asyncio.create_task(self._heartbeats(), name="heartbeats"),
            asyncio.create_task(self._listen(), name="comfy-ws"),
            asyncio.create_task(self._on_comfy_up(), name="register-on-up"),
        ]
        self._arm_idle_timer()
        try:
            await self._lease_loop()
            await self._shutdown()
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await self.watch.stop()
            await self.comfy.aclose()
            await self.queue.aclose()
        log.info("worker stopped", jobs_done=self.jobs_done)
        return 0

    def stop(self, reason: str = "stop") -> None:
        """Begin the shutdown (a signal, idle exit, or a test)."""
        if not self.stopping.is_set():
            log.info("worker stopping", reason=reason, held=list(self.runs))
            self.stopping.set()
            self.draining = True
            self._wake.set()
            self._changed()

    async def check_placement(self) -> None:
        """With WORKER_MODELS_MANIFEST: are the manifest's models where ComfyUI looks?
        (`services.fleet.placement`, the gpu-fleet workstream's.) Problems are logged, the
        worker goes on: a job needing a misplaced model is declined and runs elsewhere."""
        s = self.settings
        if s.models_manifest is None:
            return
        try:
            from services.fleet.placement import check_placement, model_roots
        except ImportError:
            log.warning("placement check unavailable (services.fleet not installed)")
            return
        roots = await asyncio.to_thread(model_roots, s.comfyui_dir, s.extra_model_paths)
        problems = await asyncio.to_thread(check_placement, s.models_manifest, roots)
        for problem in problems:
            log.error("model misplaced", file=problem.file, folder=problem.folder,
                      kind=problem.kind, fix=problem.message)  # fmt: skip
        if not problems:
            log.info("every manifest model is in place", manifest=str(s.models_manifest))

    # -- registration and the catalogue --------------------------------------------------------
    async def _register_until_reachable(self) -> None:
        backoff = Backoff(first_s=0.2, cap_s=10.0)
        while not self.stopping.is_set():
            try:
                await self.register()
                return
            except QueueUnavailable:
                await pause(backoff.delay())

    async def register(self) -> None:
        """Tell the queue who this worker is: GPU, models, price, ComfyUI, its catalogue."""
        s = self.settings
        body: dict[str, Any] = {
            "instance": s.instance, "provider": s.provider, "hourly_eur": s.hourly_eur,
            "comfyui": {"version": None, "url": s.comfyui_base_url, "up": False},
        }  # fmt: skip
        raw: bytes | None = None
        if self.watch.up.is_set():
            try:
                stats = await self.comfy.system_stats()
                raw = await self.comfy.object_info()
                models = await self.comfy.models()
            except (ComfyDown, ComfyError) as exc:
                self.watch.lost(str(exc))
            else:
                await self._take_catalog(raw)
                device = (stats.get("devices") or [{}])[0]
                vram = device.get("vram_total")
                body.update(
                    gpu=str(device.get("name") or "unknown")[:128],
                    vram_total_mb=int(vram) // (1024 * 1024) if isinstance(vram, int) else None,
                    models=models, catalog_hash=self.catalog_hash, system_stats=stats,
                    comfyui={"version": stats.get("system", {}).get("comfyui_version"),
                             "url": s.comfyui_base_url, "up": True},
                )  # fmt: skip
                self.registered_generation = self.watch.generation
        answer = await self.queue.register(body)
        self.registrations += 1
        self.lease_ttl_s = float(answer.get("lease_ttl_s", 30.0))
        if answer.get("catalog_wanted") and raw is not None and self.catalog_hash:
            await self.queue.put_catalog(self.catalog_hash, raw)
        log.info("registered", worker_id=self.queue.worker_id, comfyui_up=raw is not None,
                 catalog=self.catalog_hash, catalog_sent=bool(answer.get("catalog_wanted")))

    async def _register_again(self, seen: int, error: NotRegistered) -> None:
        """The queue forgot this worker (lease or heartbeat got 403 "not registered": its
        Redis lost the entry). Register again, once for the callers that saw the refusal
        with registration number `seen`; an unreachable queue is the caller's to retry."""
        async with self._register_lock:
            if self.registrations != seen:
                return  # another caller registered meanwhile
            log.warning("the queue forgot this worker: registering again", error=str(error))
            await self.register()
            self._wake.set()

    async def _take_catalog(self, raw: bytes) -> bool:
        """Adopt a catalogue; True if it differs from the one before."""
        digest = await asyncio.to_thread(lambda: hashlib.sha256(raw).hexdigest())
        if digest == self.catalog_hash:
            return False
        self.catalog = await asyncio.to_thread(lambda: NodeCatalog.of(json.loads(raw)))
        self.catalog_hash = digest
        return True

    async def refresh_catalog(self) -> NodeCatalog:
        """Read ComfyUI's catalogue again (a job names a model this worker did not list);
        register again if it changed."""
        if await self._take_catalog(await self.comfy.object_info()):
            with contextlib.suppress(QueueUnavailable, QueueRefused):
                await self.register()
        return self.catalog

    async def _on_comfy_up(self) -> None:
        """Register again (full details) whenever ComfyUI comes (back) up."""
        backoff = Backoff(first_s=0.2, cap_s=10.0)
        while True:
            self._comfy_changed.clear()
            if self.watch.up.is_set() and self.registered_generation != self.watch.generation:
                try:
                    await self.register()
                    backoff.reset()
                except (QueueUnavailable, QueueRefused) as exc:
                    log.warning("could not register", error=str(exc))
                    await pause(backoff.delay())
                    continue
                self._wake.set()
            await self._comfy_changed.wait()

    # -- leasing --------------------------------------------------------------------------------
    def _ready_to_lease(self) -> bool:
        return (
            not self.draining
            and self.watch.up.is_set()
            and self.registered_generation == self.watch.generation
        )

    async def _lease_loop(self) -> None:
        while not self.stopping.is_set():
            self._wake.clear()
            if self._ready_to_lease():
                held = len(self.runs)
                if held == 0 and False not in self._polls:
                    self._start_poll(prefetch=False)
                elif held == 1 and self.settings.prefetch and True not in self._polls:
                    self._start_poll(prefetch=True)
            await self._wake.wait()

    def _start_poll(self, prefetch: bool) -> None:
        task = asyncio.create_task(self._poll(prefetch), name=f"lease-prefetch={prefetch}")
        self._polls[prefetch] = task

    async def _poll(self, prefetch: bool) -> None:
        backoff = Backoff(first_s=0.2, cap_s=10.0)
        try:
            while True:
                seen = self.registrations
                try:
                    answer = await self.queue.lease(self.settings.lease_wait_s, prefetch)
                    break
                except NotRegistered as exc:
                    try:
                        await self._register_again(seen, exc)
                    except (QueueUnavailable, QueueRefused) as again:
                        log.warning("could not register", error=str(again))
                    await pause(backoff.delay())  # a queue that keeps forgetting: no hammering
                except QueueUnavailable:
                    if self.stopping.is_set():
                        return
                    await pause(backoff.delay())
                except QueueRefused as exc:  # a bug on one side; do not hammer the queue
                    log.error("lease refused", error=str(exc))
                    await pause(backoff.delay())
            self._changed()
            for job_id in answer.get("cancel") or []:
                if job_id in self.runs:
                    self.runs[job_id].cancel()
            if answer.get("drain"):
                self._drain()
            lease = answer.get("lease")
            if lease is not None:
                self._start_run(lease)
        finally:
            del self._polls[prefetch]
            self._wake.set()

    def _start_run(self, lease: dict[str, Any]) -> None:
        run = JobRun(self.shared, lease)
        self.runs[run.id] = run
        if self.stopping.is_set():
            run.release()  # leased while shutting down: straight back
        self._disarm_idle_timer()
        self.last_busy_at = time.time()
        self._tasks[run.id] = asyncio.create_task(self._job(run), name=f"job-{run.id}")
        self._changed()

    async def _job(self, run: JobRun) -> None:
        try:
            outcome = await run.run()
            if outcome.action in ("complete", "fail"):
                self.jobs_done += 1
        finally:
            self.runs.pop(run.id, None)
            self._tasks.pop(run.id, None)
            with contextlib.suppress(ValueError):
                self._submitted.remove(run.id)
            self.last_busy_at = time.time()
            if not self.runs:
                self._arm_idle_timer()
            self._wake.set()
            self._changed()

    def _on_phase(self, run: JobRun) -> None:
        if run.phase is Phase.SUBMITTED and run.id not in self._submitted:
            self._submitted.append(run.id)
        self._changed()

    def _is_head(self, run: JobRun) -> bool:
        """Whether `run` is the job ComfyUI runs now (the first submitted one still here)."""
        return bool(self._submitted) and self._submitted[0] == run.id

    def _drain(self) -> None:
        if not self.draining:
            log.info("draining: finishing the jobs held, leasing nothing new")
            self.draining = True
            self._changed()

    def _undrain(self) -> None:
        """The queue took the worker back (an admin's undrain): lease again, unless stopping."""
        if self.draining and not self.stopping.is_set():
            log.info("no longer draining: leasing again")
            self.draining = False
            self._wake.set()
            self._changed()

    # -- ComfyUI's messages ---------------------------------------------------------------------
    async def _listen(self) -> None:
        """The worker's one WebSocket: route each message to its job by prompt id. When it
        drops, the jobs in ComfyUI hear of it (ComfyUI may be gone); when it is back, they
        look whether they missed their end."""
        connected_before = False
        backoff = Backoff(first_s=0.1, cap_s=5.0)
        while True:
            await self.watch.up.wait()
            reason, heard = "WebSocket closed", False
            try:
                async for message in self.comfy.messages(self.settings.previews):
                    if not heard:
                        heard = True
                        backoff.reset()
                        if connected_before:
                            for run in list(self.runs.values()):
                                run.inbox.put_nowait(Reconnected())
                        connected_before = True
                    self._route(message)
            except ComfyDown as exc:
                reason = str(exc)
            self.watch.lost(reason)
            for run in list(self.runs.values()):
                if run.phase in (Phase.SUBMITTED, Phase.RUNNING):
                    run.inbox.put_nowait(ComfyGone(reason))
            if not await self.watch.settled() or not heard:
                await pause(backoff.delay())  # ComfyUI answers HTTP but not the socket

    def _route(self, message: dict[str, Any] | Preview) -> None:
        if isinstance(message, Preview):
            prompt_id = message.prompt_id
            if prompt_id is None:  # a legacy frame: the running job's
                running = [r for r in self.runs.values() if r.phase is Phase.RUNNING]
                prompt_id = running[0].id if running else None
        else:
            data = message.get("data")
            prompt_id = data.get("prompt_id") if isinstance(data, dict) else None
        run = self.runs.get(prompt_id) if prompt_id else None
        if run is not None:
            run.inbox.put_nowait(message)

    # -- heartbeats and status ------------------------------------------------------------------
    async def _heartbeats(self) -> None:
        while True:
            # Leases renewed well within their time to live; in between, a long-poll that
            # answers at once on a new cancel (of a job queued inside ComfyUI behind the
            # running one, which sends nothing); the cancels already acted on are not news.
            interval = max(0.5, min(self.lease_ttl_s / 3, 2.0))
            leases = [(r.id, r.lease_id) for r in self.runs.values()]
            cancelling = [r.id for r in self.runs.values() if r.cancel_requested]
            seen = self.registrations
            try:
                answer = await self.queue.heartbeat(leases, self.status(), interval, cancelling)
            except NotRegistered as exc:
                with contextlib.suppress(QueueUnavailable, QueueRefused):
                    await self._register_again(seen, exc)
                await pause(interval)
                continue
            except (QueueUnavailable, QueueRefused, LeaseLost) as exc:
                log.debug("heartbeat failed", error=str(exc))
                await pause(interval)
                continue
            finally:
                self._status_dirty.set()  # queue_ok_at moved on
            for job_id in answer.get("cancel") or []:
                if job_id in self.runs:
                    self.runs[job_id].cancel()
            for job_id in answer.get("lost") or []:
                if job_id in self.runs:
                    self.runs[job_id].lost()
            if answer.get("drain"):
                self._drain()
            else:  # the queue no longer drains it (an admin's undrain)
                self._undrain()
            if answer.get("lost"):  # at once again until those runs are gone: not a spin
                await pause(interval)

    def status(self) -> dict[str, Any]:
        """The health line: for the heartbeat (admin view) and the status file (watchdog)."""
        if self.stopping.is_set() or self.draining:
            state = "draining"
        elif self.runs:
            state = "busy"
        elif self.registered_generation < 0 or self.watch.generation == 0:
            state = "starting"
        else:
            state = "idle"
        running = [r.id for r in self.runs.values() if r.phase is Phase.RUNNING]
        up = self.watch.up.is_set()
        status: dict[str, Any] = {
            "state": state,
            "job": running[0] if running else next(iter(self.runs), None),
            "comfyui": "up" if up else "down",
            "jobs_done": self.jobs_done,
            "jobs_held": sorted(self.runs),
            "comfyui_url": self.settings.comfyui_base_url,
        }
        if not up:
            status["comfyui_reason"] = (
                f"no ComfyUI reachable at {self.settings.comfyui_base_url}: {self.watch.reason}"
                if self.watch.reason
                else f"waiting for ComfyUI at {self.settings.comfyui_base_url}"
            )
        return status

    def _changed(self) -> None:
        """Runs, ComfyUI's state or the drain flag changed: wake the loops, rewrite the file."""
        self._wake.set()
        self._comfy_changed.set()
        self._status_dirty.set()

    def file_status(self) -> dict[str, Any]:
        """WORKER_STATUS_FILE's content (team brief 5.1), for the host's idle watchdog."""
        line = self.status()
        return {
            **{k: line[k] for k in ("state", "job", "comfyui", "jobs_done")},
            "last_busy_at": time.time() if self.runs else self.last_busy_at,
            "queue_ok_at": self.queue.ok_at,
        }

    async def _status_writer(self) -> None:
        """Rewrite the status file after every change, one write at a time, in order (a
        `DirStore` write: a temporary file renamed into place, so the watchdog never reads half
        a file, and never a `*.json` that is not whole)."""
        path = self.settings.status_file
        if path is None:
            return
        folder = DirStore(path.parent)
        written: dict[str, Any] | None = None
        while True:
            self._status_dirty.clear()
            status = self.file_status()
            if status != written:
                await folder.put(path.name, json.dumps(status).encode())
                written = status
            await self._status_dirty.wait()

    # -- idle exit --------------------------------------------------------------------------------
    def _arm_idle_timer(self) -> None:
        if self.settings.idle_exit_s <= 0 or self._idle_timer is not None:
            return
        loop = asyncio.get_running_loop()
        self._idle_timer = loop.call_later(self.settings.idle_exit_s, self._idle_exit)

    def _disarm_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _idle_exit(self) -> None:
        self._idle_timer = None
        if not self.runs:
            self.stop(f"idle for {self.settings.idle_exit_s:g} s")

    # -- shutdown ---------------------------------------------------------------------------------
    async def _shutdown(self) -> None:
        grace = self.settings.shutdown_grace_s
        for run in list(self.runs.values()):
            if not self._is_head(run) and run.phase is not Phase.RUNNING:
                run.release()  # prefetched (or still preparing): back at once
        jobs = list(self._tasks.values())
        if jobs:
            log.info("waiting for the running job", grace_s=grace, jobs=list(self.runs))
            _, unfinished = await asyncio.wait(jobs, timeout=grace)
            if unfinished:
                for run in list(self.runs.values()):
                    run.release()
                await asyncio.wait(list(self._tasks.values()))
        # A waiting long-poll is dropped rather than waited out (up to lease_wait_s): a job
        # it was handed meanwhile is this worker's in the queue, and the release below hands
        # it back without spending an attempt; after the release the queue leases it nothing.
        polls = list(self._polls.values())
        for poll in polls:
            poll.cancel()
        await asyncio.gather(*polls, return_exceptions=True)
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()))
        with contextlib.suppress(QueueUnavailable, QueueRefused, LeaseLost):
            released = await self.queue.release()
            log.info("left the queue", released=released)

