"""ComfyUI's prompt queue and executor, simulated: one prompt at a time, in ComfyUI's order.

Reading guide (the order things happen for one prompt, as ComfyUI 0.3.64 does them):

1. `PromptQueue.get` pops the lowest `(number, prompt_id)` (a heap: `front` prompts have
   negative numbers) and broadcasts `status`; `put` did the same when it was queued.
2. `Executor.run_prompt`: `execution_start`; the caches keep only the entries whose node
   signature occurs in this prompt (ComfyUI's "classic" cache: what the last prompts computed
   survives only while each next prompt still contains it); `execution_cached` lists the
   prompt's nodes whose output is cached.
3. `ExecutionOrder` walks upstream from the outputs to run, skipping cached inputs, then hands
   out ready nodes with ComfyUI's preference (an output node first, then a node feeding an
   output, then one two steps from an output, else the first ready one).
4. Each node: a cached output node only re-sends its `executed` UI; any other node sends
   `progress_state` (running), `executing`, checks for an interrupt, spends its simulated time
   (samplers: per step, with `progress_state` + `progress` + optional preview frames), then
   `executed` if it has UI output and `progress_state` (finished).
5. The prompt ends with `execution_success`, or `execution_error` / `execution_interrupted`
   at the failing node; then `PromptQueue.task_done` stores the history entry and broadcasts
   `status`, and the client gets `executing {node: null}`.

Messages go to the prompt's `client_id` socket only (none at all for `execution_start`,
`execution_cached`, `executing`, `executed`, `progress`, `execution_error` if the prompt has
no client id); `progress_state` and `execution_interrupted` go to every socket then.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import heapq
import io
import json
import struct
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from PIL import Image, ImageOps

from services.comfy import catalog as cat
from services.comfy import shapes
from services.comfy.validation import is_link
from tests.comfyui_double import nodes as sim
from tests.comfyui_double.folders import Folders

MAXIMUM_HISTORY_SIZE = 10000
OOM_TIPS = (
    "This error means you ran out of memory on your GPU.\n\nTIPS: If the workflow worked "
    "before you might have accidentally set the batch_size to a large number."
)


class Messenger(Protocol):
    """The WebSocket side: `sid=None` means every socket."""

    def send(self, type_: str, data: Any, sid: str | None = None) -> None: ...
    def send_bytes(self, frame: bytes, sid: str | None = None) -> None: ...
    def supports_preview_metadata(self, sid: str | None) -> bool: ...


def now_ms() -> int:
    return int(time.time() * 1000)


# -- the queue ------------------------------------------------------------------------------------


@dataclass
class QueueItem:
    number: int | float
    prompt_id: str
    prompt: dict
    extra_data: dict
    outputs: list[str]

    def __lt__(self, other: QueueItem) -> bool:  # heapq order: (number, prompt_id)
        return (self.number, self.prompt_id) < (other.number, other.prompt_id)

    def entry(self) -> list[Any]:
        return shapes.queue_entry(
            self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs
        )


class PromptQueue:
    """ComfyUI's `PromptQueue`: a heap of pending prompts, the running one, the history."""

    def __init__(self, on_change: Callable[[], None]):
        self._on_change = on_change  # broadcasts `status`
        self.heap: list[QueueItem] = []
        self.running: dict[int, QueueItem] = {}
        self.history: dict[str, dict] = {}
        self.flags: dict[str, Any] = {}
        self._task_counter = 0
        self._wake = asyncio.Event()
        self.done = asyncio.Condition()  # notified whenever a prompt lands in the history

    def remaining(self) -> int:
        return len(self.heap) + len(self.running)

    def put(self, item: QueueItem) -> None:
        heapq.heappush(self.heap, item)
        self._on_change()
        self._wake.set()

    async def get(self) -> tuple[QueueItem, int] | None:
        """The next prompt, or None when woken by a flag (`/free`) with nothing queued."""
        while not self.heap:
            self._wake.clear()
            if self.flags:
                return None
            await self._wake.wait()
        item = heapq.heappop(self.heap)
        task_id = self._task_counter
        self._task_counter += 1
        self.running[task_id] = copy.deepcopy(item)
        self._on_change()
        return item, task_id

    def task_done(self, task_id: int, outputs: dict, meta: dict, status: dict) -> None:
        item = self.running.pop(task_id)
        if len(self.history) > MAXIMUM_HISTORY_SIZE:
            self.history.pop(next(iter(self.history)))
        self.history[item.prompt_id] = shapes.history_entry(item.entry(), outputs, status, meta)
        self._on_change()

    async def notify_done(self) -> None:
        async with self.done:
            self.done.notify_all()

    def running_entries(self) -> list[list[Any]]:
        return [item.entry() for item in self.running.values()]

    def pending_entries(self) -> list[list[Any]]:
        """The heap in its array order, as ComfyUI lists it (not sorted)."""
        return [item.entry() for item in self.heap]

    def wipe(self) -> None:
        self.heap = []
        self._on_change()

    def delete(self, prompt_id: str) -> bool:
        for index, item in enumerate(self.heap):
            if item.prompt_id == prompt_id:
                if len(self.heap) == 1:
                    self.wipe()  # ComfyUI then announces the change twice
                else:
                    self.heap.pop(index)
                    heapq.heapify(self.heap)
                self._on_change()
                return True
        return False

    def get_history(self, max_items: int | None = None, offset: int = -1) -> dict[str, dict]:
        """ComfyUI's paging: oldest first; no offset with max_items means the last ones."""
        if offset < 0 and max_items is not None:
            offset = len(self.history) - max_items
        out = {}
        for index, (prompt_id, entry) in enumerate(self.history.items()):
            if index >= offset:
                out[prompt_id] = entry
                if max_items is not None and len(out) >= max_items:
                    break
        return out

    def set_flag(self, name: str, value: Any) -> None:
        self.flags[name] = value
        self._wake.set()

    def take_flags(self) -> dict[str, Any]:
        flags, self.flags = self.flags, {}
        return flags


# -- caches ---------------------------------------------------------------------------------------


class Caches:
    """ComfyUI's classic caches: node outputs and UI by input signature, node objects by id.

    A node's signature is its class, its constant inputs, the positions of its linked inputs
    among its ancestors and, recursively, those ancestors' own signatures: the same
    computation anywhere in a graph has the same signature, whatever the node ids. File
    loaders add the file's hash (their `IS_CHANGED`); nodes with a hidden UNIQUE_ID their id.
    """

    def __init__(self, catalog: Callable[[], cat.Catalog], folders: Folders):
        self._catalog = catalog
        self._folders = folders
        self.outputs: dict[Any, tuple] = {}
        self.ui: dict[Any, dict] = {}
        self.objects: dict[tuple[str, str], dict] = {}
        self.keys: dict[str, Any] = {}

    def set_prompt(self, prompt: dict) -> None:
        catalog = self._catalog()
        self.keys = {node_id: self._signature(prompt, node_id, catalog) for node_id in prompt}
        used = set(self.keys.values())
        self.outputs = {k: v for k, v in self.outputs.items() if k in used}
        self.ui = {k: v for k, v in self.ui.items() if k in used}
        ids = {(node_id, node["class_type"]) for node_id, node in prompt.items()}
        self.objects = {k: v for k, v in self.objects.items() if k in ids}

    def output(self, node_id: str) -> tuple | None:
        return self.outputs.get(self.keys.get(node_id))

    def ui_of(self, node_id: str) -> dict | None:
        return self.ui.get(self.keys.get(node_id))

    def _signature(self, prompt: dict, node_id: str, catalog: cat.Catalog) -> Any:
        ancestors: list[str] = []
        order: dict[str, int] = {}

        def walk(current: str) -> None:
            inputs = prompt.get(current, {}).get("inputs", {})
            for key in sorted(inputs):
                if is_link(inputs[key]) and inputs[key][0] not in order:
                    order[inputs[key][0]] = len(ancestors)
                    ancestors.append(inputs[key][0])
                    walk(inputs[key][0])

        walk(node_id)
        return tuple(self._immediate(prompt, n, order, catalog) for n in [node_id, *ancestors])

    def _immediate(
        self, prompt: dict, node_id: str, order: dict[str, int], catalog: cat.Catalog
    ) -> Any:
        if node_id not in prompt:
            return (object(),)  # a missing node: never cached
        node = prompt[node_id]
        class_type = node["class_type"]
        info = catalog.get(class_type, {})
        parts: list[Any] = [class_type, self._is_changed(class_type, node)]
        if "UNIQUE_ID" in cat.hidden_kinds(info).values():
            parts.append(node_id)
        for key in sorted(node["inputs"]):
            value = node["inputs"][key]
            if is_link(value):
                parts.append((key, "ANCESTOR", order[value[0]], value[1]))
            else:
                parts.append((key, json.dumps(value, sort_keys=True, default=str)))
        return tuple(parts)

    def _is_changed(self, class_type: str, node: dict) -> Any:
        checked = cat.FILE_CHECKED_INPUTS.get(class_type)
        if checked is None:
            return False
        name = node["inputs"].get(checked[0])
        try:
            return hashlib.sha256(self._folders.annotated_path(name).read_bytes()).hexdigest()
        except (OSError, TypeError, AttributeError):
            return object()  # ComfyUI: NaN, never equal


# -- execution order --------------------------------------------------------------------------


class ExecutionOrder:
    """ComfyUI's `ExecutionList`: a topological dissolve of the nodes the outputs need."""

    def __init__(self, prompt: dict, catalog: cat.Catalog, is_cached: Callable[[str], bool]):
        self.prompt = prompt
        self.catalog = catalog
        self.is_cached = is_cached
        self.pending: dict[str, None] = {}  # insertion-ordered, as ComfyUI's dict
        self.block_count: dict[str, int] = {}
        self.blocking: dict[str, dict[str, None]] = {}

    def add(self, output_id: str) -> None:
        """Add a node and, depth first, its uncached upstream nodes."""
        stack = [output_id]
        links: list[tuple[str, str]] = []
        while stack:
            node_id = stack.pop()
            if node_id in self.pending:
                continue
            self.pending[node_id] = None
            self.block_count[node_id] = 0
            self.blocking[node_id] = {}
            for value in self.prompt[node_id]["inputs"].values():
                if is_link(value) and not self.is_cached(value[0]):
                    stack.append(value[0])
                    links.append((value[0], node_id))
        for source, target in links:
            if target not in self.blocking[source]:
                self.blocking[source][target] = None
                self.block_count[target] += 1

    def empty(self) -> bool:
        return not self.pending

    def _is_output(self, node_id: str) -> bool:
        return cat.is_output_node(self.catalog[self.prompt[node_id]["class_type"]])

    def pick(self) -> str:
        ready = [n for n in self.pending if self.block_count[n] == 0]
        for node_id in ready:
            if self._is_output(node_id):
                return node_id
        for node_id in ready:
            if any(self._is_output(b) for b in self.blocking[node_id]):
                return node_id
        for node_id in ready:
            if any(self._is_output(b2) for b in self.blocking[node_id] for b2 in self.blocking[b]):
                return node_id
        return ready[0]

    def done(self, node_id: str) -> None:
        del self.pending[node_id]
        for blocked in self.blocking.pop(node_id):
            self.block_count[blocked] -= 1


# -- progress ---------------------------------------------------------------------------------


class Progress:
    """ComfyUI's progress registry: every change re-sends all non-pending nodes' state."""

    def __init__(self, prompt_id: str, messenger: Messenger, client_id: str | None):
        self.prompt_id = prompt_id
        self.messenger = messenger
        self.client_id = client_id
        self.nodes: dict[str, dict[str, Any]] = {}

    def _entry(self, node_id: str) -> dict[str, Any]:
        return self.nodes.setdefault(node_id, {"state": "pending", "value": 0, "max": 1})

    def _send(self) -> None:
        active = {
            n: shapes.progress_node(n, self.prompt_id, e["value"], e["max"], e["state"])
            for n, e in self.nodes.items()
            if e["state"] != "pending"
        }
        self.messenger.send(
            "progress_state", shapes.progress_state(self.prompt_id, active), self.client_id
        )

    def start(self, node_id: str) -> None:
        self._entry(node_id).update(state="running", value=0.0, max=1.0)
        self._send()

    def update(self, node_id: str, value: int, max_value: int) -> None:
        self._entry(node_id).update(state="running", value=value, max=max_value)
        self._send()

    def finish(self, node_id: str) -> None:
        entry = self._entry(node_id)
        entry.update(state="finished", value=entry["max"])
        self._send()


# -- the executor -----------------------------------------------------------------------------


class Interrupted(Exception):
    pass


@dataclass
class Timing:
    """How long simulated work takes (seconds).

    `job_time_s` is shared by the nodes a prompt actually runs (cached ones take no time);
    `node_time_s[node_id or class_type]` fixes a node's time; `step_time_s` fixes a sampler's
    time per step. Waiting is cut short by an interrupt: the node finishes (a sampler stops at
    its next step), as ComfyUI checks for interrupts only between nodes and steps.
    """

    job_time_s: float = 0.0
    node_time_s: dict[str, float] = field(default_factory=dict)
    step_time_s: float | None = None


@dataclass
class Stats:
    busy_s: float = 0.0  # time spent executing prompts
    prompts_run: int = 0
    prompts_failed: int = 0
    prompts_interrupted: int = 0
    started_at: float = field(default_factory=time.monotonic)

    @property
    def wall_s(self) -> float:
        return time.monotonic() - self.started_at


class Executor:
    def __init__(
        self,
        queue: PromptQueue,
        messenger: Messenger,
        catalog: Callable[[], cat.Catalog],
        folders: Folders,
        timing: Timing,
        previews: bool,
        stats: Stats,
    ):
        self.queue = queue
        self.messenger = messenger
        self.catalog = catalog
        self.folders = folders
        self.timing = timing
        self.previews = previews
        self.stats = stats
        self.caches = Caches(catalog, folders)
        self.failures: list[sim.InjectedFailure] = []
        self.client_id: str | None = None
        self.last_node_id: str | None = None
        self.on_node_start: Callable[[str, str], None] | None = None  # test hook (crash_on_prompt)
        self._interrupted = False
        self._wake = asyncio.Event()

    # -- control --------------------------------------------------------------------------

    def interrupt(self) -> None:
        """`POST /interrupt`: the running prompt stops at its next node or sampler step."""
        self._interrupted = True
        self._wake.set()

    def fail_next(self, target: str, exception_type: str, message: str) -> None:
        self.failures.append(sim.InjectedFailure(target, exception_type, message))

    async def run(self) -> None:
        """The prompt worker loop: forever take the next prompt and execute it."""
        while True:
            got = await self.queue.get()
            if got is not None:
                item, task_id = got
                started = time.perf_counter()
                outputs, meta, status = await self.run_prompt(item)
                self.stats.busy_s += time.perf_counter() - started
                self.stats.prompts_run += 1
                self.queue.task_done(task_id, outputs, meta, status)
                if self.client_id is not None:
                    self.messenger.send(
                        "executing", shapes.executing(None, item.prompt_id), self.client_id
                    )
                await self.queue.notify_done()
            flags = self.queue.take_flags()
            if flags.get("free_memory"):
                self.caches = Caches(self.catalog, self.folders)

    # -- one prompt -----------------------------------------------------------------------

    async def run_prompt(self, item: QueueItem) -> tuple[dict, dict, dict]:
        prompt_id, prompt = item.prompt_id, item.prompt
        self._interrupted = False
        self._wake.clear()
        self.client_id = item.extra_data.get("client_id")
        messages: list[tuple[str, dict]] = []

        def add_message(type_: str, data: dict, broadcast: bool) -> None:
            """A message that is also kept for the history entry's `status.messages`."""
            messages.append((type_, data))
            if self.client_id is not None or broadcast:
                self.messenger.send(type_, data, self.client_id)

        add_message("execution_start", shapes.execution_start(prompt_id, now_ms()), broadcast=False)
        catalog = self.catalog()
        self.caches.set_prompt(prompt)
        cached = [n for n in prompt if self.caches.output(n) is not None]
        add_message(
            "execution_cached",
            shapes.execution_cached(cached, prompt_id, now_ms()),
            broadcast=False,
        )

        progress = Progress(prompt_id, self.messenger, self.client_id)
        order = ExecutionOrder(prompt, catalog, lambda n: self.caches.output(n) is not None)
        for output_id in item.outputs:
            order.add(output_id)
        run = _PromptRun(
            self,
            item,
            catalog,
            progress,
            to_run=sum(1 for n in order.pending if self.caches.output(n) is None),
        )
        success = True
        while not order.empty():
            node_id = order.pick()
            failure = await run.execute(node_id)
            if failure is not None:
                success = False
                type_, data, broadcast = failure
                add_message(type_, data, broadcast)
                if type_ == "execution_interrupted":
                    self.stats.prompts_interrupted += 1
                else:
                    self.stats.prompts_failed += 1
                break
            order.done(node_id)
        else:
            add_message(
                "execution_success", shapes.execution_success(prompt_id, now_ms()), broadcast=False
            )

        outputs, meta = {}, {}
        for node_id in prompt:
            ui = self.caches.ui_of(node_id)
            if ui is not None:
                outputs[node_id] = ui["output"]
                meta[node_id] = ui["meta"]
        self.last_node_id = None
        return outputs, meta, shapes.history_status(success, messages)

    # -- waiting --------------------------------------------------------------------------

    async def sleep(self, seconds: float) -> None:
        """Simulated work: `seconds`, or less if an interrupt comes."""
        if seconds <= 0 or self._interrupted:
            await asyncio.sleep(0)
            return
        try:
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            pass

    def check_interrupt(self) -> None:
        if self._interrupted:
            raise Interrupted


class _PromptRun:
    """The per-prompt part of the executor: runs one node at a time."""

    def __init__(
        self,
        executor: Executor,
        item: QueueItem,
        catalog: cat.Catalog,
        progress: Progress,
        to_run: int,
    ):
        self.ex = executor
        self.item = item
        self.catalog = catalog
        self.progress = progress
        self.to_run = max(to_run, 1)
        self.executed: list[str] = []

    def _node_time(self, node_id: str, class_type: str) -> float:
        timing = self.ex.timing
        for key in (node_id, class_type):
            if key in timing.node_time_s:
                return timing.node_time_s[key]
        return timing.job_time_s / self.to_run

    def _inputs(self, node_id: str, info: dict) -> dict[str, Any]:
        node = self.item.prompt[node_id]
        values: dict[str, Any] = {}
        for name, value in node["inputs"].items():
            spec = cat.input_spec(info, name)
            if spec is None:
                continue
            if is_link(value) and not spec.options.get("rawLink"):
                upstream = self.ex.caches.output(value[0])
                values[name] = upstream[value[1]] if upstream and value[1] < len(upstream) else None
            else:
                values[name] = value
        for name, kind in cat.hidden_kinds(info).items():
            if kind == "PROMPT":
                values[name] = self.item.prompt
            elif kind == "EXTRA_PNGINFO":
                values[name] = self.item.extra_data.get("extra_pnginfo")
            elif kind == "UNIQUE_ID":
                values[name] = node_id
        return values

    async def execute(self, node_id: str) -> tuple[str, dict, bool] | None:
        """Run one node; a failure is the closing message `(type, data, broadcast)`."""
        ex, prompt_id = self.ex, self.item.prompt_id
        class_type = self.item.prompt[node_id]["class_type"]
        info = self.catalog[class_type]
        if ex.caches.output(node_id) is not None:
            if ex.client_id is not None:
                ui = ex.caches.ui_of(node_id) or {}
                ex.messenger.send(
                    "executed", shapes.executed(node_id, ui.get("output"), prompt_id), ex.client_id
                )
            self.progress.finish(node_id)
            return None

        self.progress.start(node_id)
        inputs = self._inputs(node_id, info)
        if ex.client_id is not None:
            ex.last_node_id = node_id
            ex.messenger.send("executing", shapes.executing(node_id, prompt_id), ex.client_id)
        if ex.on_node_start is not None:
            ex.on_node_start(prompt_id, node_id)
        context = sim.RunContext(
            node_id=node_id,
            class_type=class_type,
            inputs=dict(inputs),
            prompt=self.item.prompt,
            extra_data=self.item.extra_data,
            folders=ex.folders,
            state=ex.caches.objects.setdefault((node_id, class_type), {}),
            run_steps=lambda steps, latent: self._run_steps(node_id, class_type, steps, latent),
            return_types=cat.return_types(info),
        )
        try:
            ex.check_interrupt()
            if class_type not in sim.SAMPLERS:
                await ex.sleep(self._node_time(node_id, class_type))
            failure = next((f for f in ex.failures if f.matches(node_id, class_type)), None)
            if failure is not None:
                failure.used = True
                ex.failures.remove(failure)
                raise sim.NodeError(failure.exception_type, failure.message)
            result = await sim.simulation(class_type)(context)
        except Interrupted:
            data = shapes.execution_interrupted(
                prompt_id, node_id, class_type, list(self.executed), now_ms()
            )
            return "execution_interrupted", data, True
        except Exception as error:
            return "execution_error", self._error(node_id, class_type, inputs, error), False

        if result.ui:
            ex.caches.ui[ex.caches.keys[node_id]] = {
                "meta": shapes.node_meta(node_id),
                "output": result.ui,
            }
            if ex.client_id is not None:
                ex.messenger.send(
                    "executed", shapes.executed(node_id, result.ui, prompt_id), ex.client_id
                )
        ex.caches.outputs[ex.caches.keys[node_id]] = result.outputs
        self.progress.finish(node_id)
        self.executed.append(node_id)
        return None

    def _error(self, node_id: str, class_type: str, inputs: dict, error: Exception) -> dict:
        if isinstance(error, sim.NodeError):
            exception_type = error.exception_type
        else:
            klass = type(error)
            exception_type = (
                klass.__qualname__
                if klass.__module__ == "builtins"
                else (f"{klass.__module__}.{klass.__qualname__}")
            )
        tips = OOM_TIPS if exception_type.endswith("OutOfMemoryError") else ""
        return shapes.execution_error(
            self.item.prompt_id,
            node_id,
            class_type,
            list(self.executed),
            exception_message=f"{error}\n{tips}",
            exception_type=exception_type,
            traceback=traceback.format_tb(error.__traceback__),
            current_inputs={name: [_format_value(value)] for name, value in inputs.items()},
            current_outputs=list(self.item.prompt),
            timestamp=now_ms(),
        )

    async def _run_steps(
        self, node_id: str, class_type: str, steps: int, latent: sim.LatentValue | None
    ) -> None:
        ex = self.ex
        timing = ex.timing
        fixed = node_id in timing.node_time_s or class_type in timing.node_time_s
        if timing.step_time_s is not None and not fixed:
            per_step = timing.step_time_s
        else:
            per_step = self._node_time(node_id, class_type) / max(steps, 1)
        for step in range(1, steps + 1):
            await ex.sleep(per_step)
            ex.check_interrupt()
            self.progress.update(node_id, step, steps)
            preview = await asyncio.to_thread(_preview_jpeg, latent, step) if ex.previews else None
            with_metadata = ex.messenger.supports_preview_metadata(ex.client_id)
            if preview is not None and with_metadata:
                metadata = json.dumps(
                    shapes.preview_metadata(node_id, self.item.prompt_id, "image/jpeg")
                ).encode()
                ex.messenger.send_bytes(
                    struct.pack(">I", shapes.PREVIEW_IMAGE_WITH_METADATA)
                    + struct.pack(">I", len(metadata))
                    + metadata
                    + preview,
                    ex.client_id,
                )
            ex.messenger.send(
                "progress", shapes.progress(step, steps, self.item.prompt_id, node_id), ex.client_id
            )
            if preview is not None and not with_metadata:
                ex.messenger.send_bytes(
                    struct.pack(">I", shapes.PREVIEW_IMAGE)
                    + struct.pack(">I", shapes.PREVIEW_FORMAT_CODES["JPEG"])
                    + preview,
                    ex.client_id,
                )


def _format_value(value: Any) -> Any:
    if value is None or isinstance(value, (int, float, bool, str)):
        return value
    return str(value)


def _preview_jpeg(latent: sim.LatentValue | None, step: int) -> bytes:
    """A latent2rgb-like preview: the latent's size scaled to fit 512x512, as a JPEG."""
    width, height = (latent.width, latent.height) if latent else (8, 8)
    image = Image.new("RGB", (width, height), ((37 * step) % 256, 96, 160))
    image = ImageOps.contain(image, (512, 512), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()
