"""Is ComfyUI up? Watch an attached one; start, watch and restart a managed one.

Readiness is `GET /system_stats` answering, probed with capped exponential backoff (no fixed
sleeps). Each state change is logged once, plainly: "no ComfyUI reachable at ..." is what
`make up` shows when nobody started one. A managed ComfyUI (`WORKER_COMFYUI_DIR`) runs as a
child process with `OMP_NUM_THREADS`/`MKL_NUM_THREADS` limited (GPU.md: several thread-limited
ComfyUIs keep a big GPU busy, one with default threads does not), is restarted when it exits,
and can be restarted on request (a job it will not stop).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from enum import StrEnum

import structlog

from services.worker.comfy import ComfyClient, ComfyDown, ComfyError
from services.worker.settings import WorkerSettings

log = structlog.get_logger(__name__)

#: Probe backoff: first retry after this, doubling up to the cap.
_FIRST_S, _CAP_S = 0.05, 5.0
#: A managed ComfyUI gets this long to exit on SIGTERM before it is killed.
_STOP_S = 10.0


class ComfyState(StrEnum):
    STARTING = "starting"
    UP = "up"
    DOWN = "down"


class Backoff:
    """Capped exponential delays: 0.05, 0.1, 0.2 ... 5 s."""

    def __init__(self, first_s: float = _FIRST_S, cap_s: float = _CAP_S) -> None:
        self.first_s, self.cap_s = first_s, cap_s
        self.next_s = first_s

    def delay(self) -> float:
        current = self.next_s
        self.next_s = min(self.next_s * 2, self.cap_s)
        return current

    def reset(self) -> None:
        self.next_s = self.first_s


class ComfyWatch:
    """Whether the ComfyUI at `comfy.base_url` answers, and waiting until it does.

    `up` is set while it answers. `lost()` (a call failed, the WebSocket dropped) clears it and
    re-checks at once; `settled()` then says whether ComfyUI is back or gone. `generation`
    counts its comebacks after being down."""

    def __init__(self, comfy: ComfyClient, on_change: Callable[[], None] | None = None) -> None:
        self.comfy = comfy
        self.state = ComfyState.STARTING
        self.up = asyncio.Event()
        self.generation = 0
        self.reason = ""
        self.stats: dict[str, object] | None = None
        self._on_change = on_change or (lambda: None)
        self._check = asyncio.Event()  # set by lost(): the loop probes at once
        self._news = asyncio.Event()  # pulsed whenever the state settles
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="comfy-watch")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _settle(self, state: ComfyState, reason: str = "") -> None:
        """The state is known: log it if it changed, wake whoever waits on it."""
        changed = state is not self.state
        previous, self.state, self.reason = self.state, state, reason
        if state is ComfyState.UP:
            if changed:
                self.generation += 1
            self.up.set()
        else:
            self.up.clear()
        if changed:
            if state is ComfyState.UP:
                log.info("ComfyUI is up", url=self.comfy.base_url, was=previous.value)
            elif state is ComfyState.DOWN:
                log.warning(
                    f"no ComfyUI reachable at {self.comfy.base_url}; jobs wait in the queue",
                    reason=reason,
                )
            else:
                log.info("ComfyUI is starting", url=self.comfy.base_url)
        news, self._news = self._news, asyncio.Event()
        news.set()
        self._on_change()

    async def probe(self, timeout_s: float = 5.0) -> bool:
        try:
            self.stats = await self.comfy.system_stats(timeout_s)
        except (ComfyDown, ComfyError, ValueError) as exc:
            self.reason = str(exc)
            return False
        return True

    def lost(self, reason: str) -> None:
        """Something failed against ComfyUI: find out at once whether it is still there."""
        if self.up.is_set():
            log.info("checking ComfyUI", reason=reason)
            self.up.clear()
            self._check.set()

    async def settled(self) -> bool:
        """After `lost()`: True once ComfyUI answers again, False once it is known not to
        (down, or a managed one restarting: whatever it ran is gone)."""
        while True:
            news = self._news
            if self.up.is_set():
                return True
            if self.state is not ComfyState.UP:
                return False
            await news.wait()

    async def _run(self) -> None:
        backoff = Backoff()
        while not self._stopping:
            if await self.probe():
                backoff.reset()
                self._check.clear()
                self._settle(ComfyState.UP)
                await self._check.wait()  # until lost()
                continue
            self._settle(ComfyState.DOWN, self.reason)
            await pause(backoff.delay())


async def pause(seconds: float) -> None:
    """Wait `seconds` (a backoff step; cancelled with its task)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await asyncio.Event().wait()


class ComfySupervisor(ComfyWatch):
    """A ComfyUI this worker starts from a checkout and restarts whenever it exits."""

    def __init__(
        self,
        comfy: ComfyClient,
        settings: WorkerSettings,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(comfy, on_change)
        self.settings = settings
        self.process: asyncio.subprocess.Process | None = None
        self.restarts = 0

    async def _spawn(self) -> asyncio.subprocess.Process:
        s = self.settings
        assert s.comfyui_dir is not None
        threads = str(s.comfyui_threads)
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        argv = s.comfyui_argv()
        log.info("starting ComfyUI", dir=str(s.comfyui_dir), argv=argv, threads=threads)
        return await asyncio.create_subprocess_exec(
            sys.executable, *argv, cwd=s.comfyui_dir, env=env, start_new_session=True
        )

    async def _run(self) -> None:
        backoff = Backoff(first_s=0.1, cap_s=30.0)  # between restarts of a crashing ComfyUI
        while not self._stopping:
            self._settle(ComfyState.STARTING)
            self.process = await self._spawn()
            exited = asyncio.ensure_future(self.process.wait())
            if await self._until_ready(exited):
                backoff.reset()
                self._check.clear()
                self._settle(ComfyState.UP)
                while not exited.done():
                    check = asyncio.ensure_future(self._check.wait())
                    await asyncio.wait([exited, check], return_when=asyncio.FIRST_COMPLETED)
                    check.cancel()
                    if exited.done():
                        break
                    self._check.clear()
                    if await self.probe():  # lost(): it still answers
                        self._settle(ComfyState.UP)
                    else:
                        log.warning("ComfyUI stopped answering; restarting it", reason=self.reason)
                        await self._terminate()
            await exited
            if self._stopping:
                return
            self.restarts += 1
            self._settle(ComfyState.DOWN, f"ComfyUI exited with code {self.process.returncode}")
            await pause(backoff.delay())

    async def _until_ready(self, exited: asyncio.Future[int]) -> bool:
        """Probe /system_stats with backoff until it answers (True) or the process exits."""
        backoff = Backoff()
        while not exited.done():
            if await self.probe():
                return True
            delay = asyncio.ensure_future(pause(backoff.delay()))
            await asyncio.wait([exited, delay], return_when=asyncio.FIRST_COMPLETED)
            delay.cancel()
        return False

    async def restart(self, reason: str) -> None:
        """Stop the running ComfyUI (it is started again by the loop)."""
        log.warning("restarting ComfyUI", reason=reason)
        await self._terminate()

    async def _terminate(self) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(_STOP_S):
                await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()

    async def stop(self) -> None:
        self._stopping = True
        await self._terminate()
        await super().stop()
