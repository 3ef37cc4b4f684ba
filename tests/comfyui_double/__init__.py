"""A ComfyUI 0.3.64 test double: the real server's routes, messages and queue, no GPU.

Built from the traces in `../shared/comfyui/` (the trace wins where it and the double
disagree; `tests/test_comfyui_double.py` replays every trace against it and lists the allowed
differences). It speaks ComfyUI's HTTP and WebSocket API on aiohttp, validates prompts with
`services.comfy.validation`, and runs ComfyUI's one-at-a-time queue over simulated nodes
(`nodes.py`) in ComfyUI's execution order with its cache (`executor.py`).

In-process (worker, gateway and benchmark tests)::

    async with start_double(tmp_path, job_time_s=0.2, models={"checkpoints": ["a.ckpt"]}) as comfy:
        comfy.url                     # "http://127.0.0.1:<free port>"
        comfy.fail_next("KSampler", "torch.OutOfMemoryError", "CUDA out of memory")  # or node id
        await comfy.kill()            # dies mid-job: port closed, sockets dropped, requests cut
        await comfy.restart()         # same port, fresh state (queue, history, cache, temp files)
        comfy.quiet_ws(); comfy.loud_ws()   # WebSockets stay open but receive nothing / resume
        comfy.stats()                 # DoubleStats(busy_s, prompts_run, ...): busy / wall
        comfy.history                 # ComfyUI's history dict, live
        comfy.files                   # {"output": [...], "temp": [...], "input": [...]}
        comfy.add_model("loras", "x.safetensors")
        await comfy.wait_done(prompt_id)   # its history entry, once it is there
        comfy.interrupt()             # as POST /interrupt

Options (`DoubleOptions`): `job_time_s` (seconds per prompt, shared by the nodes it runs),
`node_time_s` (`{class_type or node_id: seconds}`), `step_time_s` (per sampler step),
`object_info` (a catalogue dict or JSON path; default the traces' catalogue), `models`
(`{folder: [file names]}`: files created under `models/`, listed by `/models` and the loader
combos), `previews` (binary preview frames per sampler step, like `--preview-method`),
`port` (0: a free one), `host`, `devices` (`/system_stats` devices), `argv`.

The `comfy` fixture (tests/conftest.py) is a double with default options.

As a process: `python -m tests.comfyui_double --listen 127.0.0.1 --port P
--disable-auto-launch [...]` (see `__main__.py`), and `fake_checkout/main.py` for a worker's
`COMFYUI_DIR`.

Known differences from ComfyUI 0.3.64 (beyond what the trace replay allows for):

- No frontend: `GET /` is a stub page, `/extensions` is `[]`, no `/templates`, `/docs` or
  static files. No `/v2/userdata`, `/userdata/{file}/move`, `full_info`/`split` listings,
  multi-user, `/internal/logs/subscribe`; `/internal/logs` is empty.
- Nodes are simulated (`nodes.py`): no tensors, flat-colour pixels, synthetic preview JPEGs;
  classes without a stand-in return placeholders (no files, no UI) and never fail on their
  own. Lazy inputs are treated as ordinary links; node expansion, async nodes, execution
  blockers and `NOT_IDEMPOTENT` are not modelled. `IS_CHANGED` only for the file loaders
  (sha256 of the file). Only the classic cache (no `--cache-lru` / `--cache-none`).
- Custom validation (`VALIDATE_INPUTS`) only for the file loaders of
  `services.comfy.catalog.FILE_CHECKED_INPUTS`. Set-ordered lists get a fixed order:
  outputs in reverse prompt order, inputs in declaration order, `executed` in run order.
- An interrupt also cuts the current node's simulated time short (the node then finishes,
  as ComfyUI's would, just sooner).
- `/system_stats`: RAM from /proc/meminfo, a CPU device unless `devices` (or
  `COMFY_DOUBLE_GPU`) says otherwise; fixed pytorch version. `/free` `unload_models` is a
  no-op. Upload `type=""` counts as input (ComfyUI: 500). No CORS/compression/TLS options.
- Faithfully kept: a reconnect with the same clientId replaces the old socket in the map,
  and closing the old one later unmaps the new one (ComfyUI's behaviour).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from services.comfy import catalog as cat
from tests.comfyui_double.executor import Stats, Timing
from tests.comfyui_double.folders import Folders
from tests.comfyui_double.server import ComfyServer


@dataclass
class DoubleOptions:
    job_time_s: float = 0.0
    node_time_s: dict[str, float] = field(default_factory=dict)
    step_time_s: float | None = None
    object_info: Mapping[str, Any] | str | Path | None = None
    models: Mapping[str, list[str]] = field(default_factory=dict)
    previews: bool = False
    host: str = "127.0.0.1"
    port: int = 0
    devices: list[dict] | None = None
    argv: list[str] | None = None
    output_directory: Path | None = None
    input_directory: Path | None = None
    temp_directory: Path | None = None
    debug_routes: bool = False


@dataclass(frozen=True)
class DoubleStats:
    busy_s: float  # time spent executing prompts
    prompts_run: int
    prompts_failed: int
    prompts_interrupted: int
    wall_s: float  # since the double (not the current server) started


def load_catalog(source: Mapping[str, Any] | str | Path | None) -> cat.Catalog:
    if source is None:
        from tests.traces import object_info

        return json.loads(json.dumps(object_info()))
    if isinstance(source, (str, Path)):
        return json.loads(Path(source).read_text())
    return json.loads(json.dumps(source))


class ComfyDouble:
    """Control of a running double; see the module docstring."""

    def __init__(self, root: Path, options: DoubleOptions):
        self.options = options
        self.folders = Folders(
            root, options.output_directory, options.input_directory, options.temp_directory
        )
        self.catalog = load_catalog(options.object_info)
        self.timing = Timing(options.job_time_s, dict(options.node_time_s), options.step_time_s)
        self._stats = Stats()
        self.port = options.port
        self.server: ComfyServer | None = None
        self._quiet = False

    @property
    def url(self) -> str:
        return f"http://{self.options.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.options.host}:{self.port}/ws"

    def _argv(self) -> list[str]:
        return self.options.argv or [
            "main.py",
            "--listen",
            self.options.host,
            "--port",
            str(self.port),
            "--disable-auto-launch",
        ]

    async def start(self) -> None:
        self.folders.create()
        for folder, names in self.options.models.items():
            for name in names:
                if not (self.folders.model_dir(folder) / name).exists():
                    self.folders.add_model(folder, name)
        self.server = ComfyServer(
            self.folders,
            self.catalog,
            self.timing,
            self.options.previews,
            self._stats,
            self._argv(),
            self.options.devices,
            self.options.debug_routes,
        )
        self.server.hub.quiet = self._quiet
        self.port = await self.server.start(self.options.host, self.port)

    async def kill(self) -> None:
        """ComfyUI dies: the port closes, WebSockets drop, in-flight requests fail."""
        if self.server is not None:
            await self.server.stop()
            self.server = None

    async def restart(self) -> None:
        """ComfyUI restarts on the same port: queue, history, cache and temp files are gone."""
        await self.kill()
        await self.start()

    @property
    def alive(self) -> bool:
        return self.server is not None

    def _server(self) -> ComfyServer:
        if self.server is None:
            raise RuntimeError("the double is not running (killed); call restart()")
        return self.server

    def fail_next(
        self, target: str, exception_type: str = "RuntimeError", message: str = "injected failure"
    ) -> None:
        """The next node whose class type or node id is `target` fails with this exception."""
        self._server().executor.fail_next(target, exception_type, message)

    def quiet_ws(self) -> None:
        """WebSockets stay open but receive nothing (history keeps updating)."""
        self._quiet = True
        if self.server is not None:
            self.server.hub.quiet = True

    def loud_ws(self) -> None:
        self._quiet = False
        if self.server is not None:
            self.server.hub.quiet = False

    def interrupt(self) -> None:
        self._server().executor.interrupt()

    def add_model(self, folder: str, name: str, metadata: dict[str, str] | None = None) -> None:
        self.folders.add_model(folder, name, metadata)

    async def wait_done(self, prompt_id: str, timeout_s: float = 30.0) -> dict:
        """Wait until `prompt_id` is in the history (finished, failed or interrupted)."""
        queue = self._server().queue
        async with asyncio.timeout(timeout_s), queue.done:
            await queue.done.wait_for(lambda: prompt_id in queue.history)
        return queue.history[prompt_id]

    def stats(self) -> DoubleStats:
        s = self._stats
        return DoubleStats(
            s.busy_s, s.prompts_run, s.prompts_failed, s.prompts_interrupted, s.wall_s
        )

    @property
    def history(self) -> dict[str, dict]:
        return self._server().queue.history

    @property
    def files(self) -> dict[str, list[str]]:
        return self.folders.listing()


@contextlib.asynccontextmanager
async def start_double(tmp_path: Path, **options: Any) -> AsyncIterator[ComfyDouble]:
    """Run a double in this event loop on a free port (or `port=`), folders under `tmp_path`."""
    known = {f.name for f in fields(DoubleOptions)}
    unknown = set(options) - known
    if unknown:
        raise TypeError(f"unknown double options: {sorted(unknown)}; known: {sorted(known)}")
    double = ComfyDouble(Path(tmp_path), DoubleOptions(**options))
    await double.start()
    try:
        yield double
    finally:
        await double.kill()


__all__ = ["ComfyDouble", "DoubleOptions", "DoubleStats", "start_double"]
