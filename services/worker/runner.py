"""One leased job on this worker's ComfyUI, from the lease to its report.

The job's id is its ComfyUI prompt id (team brief 5.0): it is submitted with `prompt_id`, so
every message ComfyUI sends about it already names the id the participant was given. The
runner:

1. declines the job if the graph needs a node class or model file this worker's ComfyUI lacks
   (the queue offers it to the others; ComfyUI's own validation error goes with it);
2. stages the participant's input files into ComfyUI (`files.stage_inputs`) and submits;
3. follows ComfyUI's messages for the prompt (the worker's one WebSocket routes them here) and
   relays each to the queue in order, an `executed` only once that node's files are stored;
4. after `executing {node: null}` (ComfyUI wrote the history entry) reads the history entry,
   the authoritative outputs, stores any file not stored yet and reports: complete with the
   outputs, GPU time (ComfyUI's execution_start to execution_success timestamps) and the
   history's status and meta; or fail with ComfyUI's own error shape.

Completion never depends on the WebSocket alone: when it goes quiet the runner asks ComfyUI's
`/queue` and `/history/{id}` (with capped backoff) and finishes from the history, relaying the
messages the history recorded. If ComfyUI dies (or restarts and forgets the job) the job is
handed back: the one that was running fails with `retry` (an attempt is spent, so a job that
kills ComfyUI every time ends failed after the queue's max_attempts instead of looping), the
others are released (they never ran: no attempt spent).

Cancel: `POST /queue {delete}` (if still pending) and `POST /interrupt {prompt_id}` (if
running); if ComfyUI has not stopped by the deadline the job is reported and a managed
ComfyUI restarted.
"""

from __future__ import annotations

import asyncio
import copy
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from services.comfy import catalog as cat
from services.comfy import shapes
from services.comfy.validation import error as comfy_error
from services.comfy.validation import validate_prompt
from services.contracts import COMFY_JOB_MESSAGES
from services.storage import ObjectStore
from services.worker.catalog import NodeCatalog
from services.worker.comfy import ComfyClient, ComfyDown, ComfyError, Preview, PromptRejected
from services.worker.files import MissingInput, OutputStore, stage_inputs
from services.worker.queue import LeaseLost, QueueClient, QueueRefused, QueueUnavailable
from services.worker.relay import Relay
from services.worker.settings import WorkerSettings
from services.worker.supervisor import Backoff, ComfyWatch

log = structlog.get_logger(__name__)

#: Reports (complete, fail, ...) are retried this long while the queue is unreachable.
REPORT_RETRY_S = 600.0
#: The messages that end a prompt's execution (the history entry follows).
_CLOSING = ("execution_success", "execution_error", "execution_interrupted")


class Phase(enum.Enum):
    PREPARING = "preparing"  # leased; inputs being staged
    SUBMITTED = "submitted"  # in ComfyUI's queue
    RUNNING = "running"  # ComfyUI sent execution_start
    DONE = "done"


@dataclass(frozen=True)
class ComfyGone:
    """Inbox marker: the worker's WebSocket to ComfyUI dropped."""

    reason: str


@dataclass(frozen=True)
class Reconnected:
    """Inbox marker: the WebSocket is back; messages may have been missed."""


@dataclass(frozen=True)
class Nudge:
    """Inbox marker: a cancel request or a lost lease to look at."""


@dataclass(frozen=True)
class Outcome:
    """How the job ends on this worker, and what the queue is told."""

    action: str  # complete | fail | decline | release | drop
    outputs: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    retry: bool = False
    gpu_ms: int | None = None
    history: dict[str, Any] | None = None


class Died(Exception):
    """ComfyUI is gone (or restarted and forgot the job)."""


@dataclass
class Shared:
    """What every job on this worker uses."""

    settings: WorkerSettings
    queue: QueueClient
    comfy: ComfyClient
    watch: ComfyWatch
    store: ObjectStore
    catalog: Callable[[], NodeCatalog]
    refresh_catalog: Callable[[], Awaitable[NodeCatalog]]
    restart_comfy: Callable[[str], Awaitable[None]] | None
    is_head: Callable[[JobRun], bool]
    on_phase: Callable[[JobRun], None]
    known_files: dict[tuple[str, str, str], str] = field(default_factory=dict)


def missing_requirements(prompt: dict[str, Any], catalog: NodeCatalog) -> bool:
    """Whether the graph names a node class or a model file this ComfyUI does not have."""
    for node in prompt.values():
        if not isinstance(node, dict):
            continue
        class_type = node.get("class_type")
        if not isinstance(class_type, str) or class_type not in catalog.nodes:
            return True
        for name in catalog.models.get(class_type, ()):
            value = (node.get("inputs") or {}).get(name)
            spec = cat.input_spec(catalog.nodes[class_type], name)
            allowed = (spec.combo_values if spec is not None else None) or []
            if isinstance(value, str) and spec is not None and value not in allowed:
                return True
    return False


def lacking_error(prompt: dict[str, Any], catalog: NodeCatalog) -> dict[str, Any]:
    """ComfyUI's error for the graph on this ComfyUI (its /prompt 400 body)."""
    result = validate_prompt(copy.deepcopy(prompt), catalog.nodes, file_exists=lambda _: True)
    if not result.ok:
        return result.error_body()
    # Partly valid: ComfyUI would run the other outputs; the pool runs all of them elsewhere.
    failed = comfy_error("prompt_outputs_failed_validation", "Prompt outputs failed validation")
    return {
        "error": failed,
        "node_errors": result.node_errors,
    }


def only_missing_models(body: dict[str, Any], catalog: NodeCatalog) -> bool:
    """Whether ComfyUI's 400 is about a missing node class or model file only (another worker
    may have it) rather than a mistake in the graph."""
    error = body.get("error") or {}
    if error.get("type") == "invalid_prompt":
        return "does not exist" in str(error.get("message", ""))
    node_errors = body.get("node_errors") or {}
    if not node_errors:
        return False
    model_names = catalog.model_input_names
    for node_error in node_errors.values():
        for reason in node_error.get("errors", []):
            name = (reason.get("extra_info") or {}).get("input_name")
            if reason.get("type") != "value_not_in_list" or name not in model_names:
                return False
    return True


class JobRun:
    """One job: `run()` does the whole of it; the worker feeds `inbox` and calls `cancel()`."""

    def __init__(self, shared: Shared, lease: dict[str, Any]) -> None:
        self.shared = shared
        self.job: dict[str, Any] = lease["job"]
        self.id: str = self.job["id"]
        self.user: str = self.job["user"]
        self.lease_id: str = lease["lease_id"]
        self.workflow: dict[str, Any] = lease["workflow"]
        self.extra_data: dict[str, Any] | None = lease.get("extra_data")
        self.phase = Phase.PREPARING
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        self.cancel_requested = False
        self.lease_lost = False
        self.releasing = False  # the worker hands it back (shutdown)
        self._cancel_sent_at: float | None = None
        self._closing: tuple[str, dict[str, Any]] | None = None
        self._start_ts: int | None = None
        self._relayed_types: set[str] = set()
        self._relayed_executed: set[str] = set()
        s = shared.settings
        self.relay = Relay(
            shared.queue, self.id, self.lease_id, self.cancel, self._lost,
            preview_interval_s=s.preview_interval_s,
        )  # fmt: skip
        self.outputs = OutputStore(
            self.user, self.id, shared.store, shared.comfy, shared.known_files
        )

    # -- control from the worker ----------------------------------------------------------------
    def cancel(self) -> None:
        """The owner (or an admin) cancelled the job."""
        if not self.cancel_requested:
            self.cancel_requested = True
            self.inbox.put_nowait(Nudge())

    def _lost(self) -> None:
        self.lease_lost = True
        self.inbox.put_nowait(Nudge())

    def lost(self) -> None:
        """The queue says this worker no longer holds the lease."""
        self._lost()

    def release(self) -> None:
        """Hand the job back (shutdown): it stops here and goes to another worker."""
        if not self.releasing:
            self.releasing = True
            self.inbox.put_nowait(Nudge())

    def _set_phase(self, phase: Phase) -> None:
        self.phase = phase
        self.shared.on_phase(self)

    # -- the job --------------------------------------------------------------------------------
    async def run(self) -> Outcome:
        log.info("job leased", job=self.id, user=self.user, attempt=self.job.get("attempt"))
        try:
            outcome = await self._run()
        except Died as exc:
            outcome = self._handed_back(str(exc))
        except Exception as exc:  # storage, ComfyUI answering nonsense, a bug: not the graph's
            log.exception("job failed on this worker", job=self.id)
            outcome = Outcome("fail", error=_host_error("worker_error", exc), retry=True)
        if outcome.action in ("release", "drop"):
            await self._withdraw()
            self.relay.close()
        else:
            await self.relay.flush()
        self._set_phase(Phase.DONE)
        await self._report(outcome)
        return outcome

    async def _run(self) -> Outcome:
        shared = self.shared
        checked = False
        while True:
            try:
                if not checked and missing_requirements(self.workflow, shared.catalog()):
                    catalog = await shared.refresh_catalog()  # a model may have been added
                    if missing_requirements(self.workflow, catalog):
                        return Outcome("decline", error=lacking_error(self.workflow, catalog))
                checked = True
                if self.phase is Phase.PREPARING:
                    if (stop := self._stopped_before_start()) is not None:
                        return stop
                    await self._submit()
                return await self._follow()
            except MissingInput as exc:
                return Outcome("fail", error=exc.body)
            except PromptRejected as exc:
                if only_missing_models(exc.body, shared.catalog()):
                    return Outcome("decline", error=exc.body)
                return Outcome("fail", error=exc.body)
            except ComfyDown as exc:
                await self._comfy_trouble(str(exc))

    def _stopped_before_start(self) -> Outcome | None:
        if self.lease_lost:
            return Outcome("drop")
        if self.releasing:
            return Outcome("release")
        if self.cancel_requested:
            return Outcome("fail", error=_cancelled())
        return None

    async def _submit(self) -> None:
        shared = self.shared
        prompt = await stage_inputs(
            self.workflow, self.user, shared.catalog(), shared.store, shared.comfy
        )
        if int(self.job.get("attempt") or 0) > 1:
            await shared.comfy.delete_history(self.id)  # from an earlier attempt, here
        await shared.comfy.submit(prompt, self.id, self.extra_data)
        self._set_phase(Phase.SUBMITTED)
        log.info("job submitted to ComfyUI", job=self.id)

    async def _comfy_trouble(self, reason: str) -> None:
        """A call to ComfyUI failed: go on if it is (still or again) there and has the job,
        raise Died if not."""
        watch = self.shared.watch
        watch.lost(reason)
        if not await watch.settled():
            raise Died(f"ComfyUI is gone: {reason}")
        where = await self._where()
        if self.phase is Phase.PREPARING:
            if where != "gone":  # the submit reached it before the connection broke
                self._set_phase(Phase.SUBMITTED)
            return
        if where == "gone":
            raise Died(f"ComfyUI restarted and no longer has the job ({reason})")

    async def _where(self) -> str:
        """'queued' (pending or running), 'done' (in the history) or 'gone'. The queue is read
        before the history: ComfyUI moves a prompt from one to the other atomically."""
        running, pending = await self.shared.comfy.queue()
        if self.id in running or self.id in pending:
            return "queued"
        return "done" if await self.shared.comfy.history(self.id) is not None else "gone"

    # -- following ComfyUI ----------------------------------------------------------------------
    async def _follow(self) -> Outcome:
        settings = self.shared.settings
        quiet = Backoff(first_s=settings.quiet_after_s, cap_s=max(30.0, settings.quiet_after_s))
        loop = asyncio.get_running_loop()
        while True:
            if (stop := await self._control()) is not None:
                return stop
            timeout = quiet.next_s
            if self._cancel_sent_at is not None:
                left = self._cancel_sent_at + settings.cancel_deadline_s - loop.time()
                if left <= 0:
                    return await self._cancel_timed_out()
                timeout = min(timeout, left)
            try:
                async with asyncio.timeout(timeout):
                    item = await self.inbox.get()
            except TimeoutError:
                if self._cancel_sent_at is None:
                    quiet.delay()
                if (entry := await self._history_if_done()) is not None:
                    return await self._finish(entry)
                continue
            if isinstance(item, dict):
                quiet.reset()
                if await self._on_message(item):  # executing {node: null}: the end
                    entry = await self._history_if_done()
                    if entry is None:  # ComfyUI writes it before it says so; be safe
                        continue
                    return await self._finish(entry)
            elif isinstance(item, Preview):
                if settings.previews:
                    self.relay.preview(item)
            elif isinstance(item, ComfyGone):
                raise ComfyDown(item.reason)
            elif isinstance(item, Reconnected) and (entry := await self._history_if_done()):
                return await self._finish(entry)

    async def _history_if_done(self) -> dict[str, Any] | None:
        """The job's history entry if ComfyUI finished it, None while it is still queued or
        running; Died if ComfyUI no longer knows it. One request when it is done (the common
        case: after `executing {node: null}`)."""
        comfy = self.shared.comfy
        if (entry := await comfy.history(self.id)) is not None:
            return entry
        where = await self._where()  # queue, then history: it may have just finished
        if where == "gone":
            raise Died("ComfyUI no longer has the job (it restarted)")
        return await comfy.history(self.id) if where == "done" else None

    async def _control(self) -> Outcome | None:
        """React to a lost lease, a shutdown hand-back, a cancel request."""
        if self.lease_lost:
            return Outcome("drop")
        if self.releasing:
            return Outcome("release")
        if self.cancel_requested and self._cancel_sent_at is None:
            self._cancel_sent_at = asyncio.get_running_loop().time()
            log.info("cancelling job in ComfyUI", job=self.id, phase=self.phase.value)
            comfy = self.shared.comfy
            await comfy.delete_pending(self.id)  # not started yet: it never will
            await comfy.interrupt(self.id)  # running: stops at its next node or step
            if await self._where() == "gone":  # deleted before it ran: nothing will follow
                return Outcome("fail", error=_cancelled())
        return None

    async def _cancel_timed_out(self) -> Outcome:
        s = self.shared
        deadline = s.settings.cancel_deadline_s
        log.error("ComfyUI did not stop the cancelled job", job=self.id, deadline_s=deadline)
        if s.restart_comfy is not None:
            await s.restart_comfy(f"job {self.id} did not stop within {deadline:g} s of a cancel")
        error = comfy_error(
            "cancel_timeout",
            f"ComfyUI did not stop the job within {deadline:g} s of the cancel",
            "the worker restarted its ComfyUI" if s.restart_comfy else "",
        )
        return Outcome("fail", error=error)

    async def _on_message(self, message: dict[str, Any]) -> bool:
        """Relay one message; True when it is ComfyUI's `executing {node: null}` (the end)."""
        type_, data = message.get("type"), message.get("data") or {}
        if type_ == "executing" and data.get("node") is None:
            return True
        if type_ not in COMFY_JOB_MESSAGES:
            return False
        if type_ == "execution_start":
            self._start_ts = data.get("timestamp")
            self._set_phase(Phase.RUNNING)
        elif type_ == "executed":
            data = {**data, "output": await self.outputs.store_output(data.get("output"))}
            self._relayed_executed.add(str(data.get("node")))
        elif type_ in _CLOSING:
            self._closing = (type_, data)
        self._relayed_types.add(type_)
        self.relay.send(type_, data)
        return False

    # -- the end --------------------------------------------------------------------------------
    async def _finish(self, entry: dict[str, Any]) -> Outcome:
        """Store the history's outputs, relay what the WebSocket missed, build the report."""
        status = entry.get("status") or {}
        recorded = [(m[0], m[1]) for m in status.get("messages") or [] if len(m) == 2]
        for type_, data in recorded:  # messages the WebSocket did not bring
            if type_ in COMFY_JOB_MESSAGES and type_ not in self._relayed_types:
                if type_ in _CLOSING:
                    break  # sent after the executed ones below
                self._relayed_types.add(type_)
                self.relay.send(type_, data)
        outputs: dict[str, Any] = {}
        for node_id, output in (entry.get("outputs") or {}).items():
            outputs[node_id] = await self.outputs.store_output(output)
            if node_id not in self._relayed_executed:
                self._relayed_executed.add(node_id)
                executed = {"node": node_id, "display_node": node_id,
                            "output": outputs[node_id], "prompt_id": self.id}  # fmt: skip
                self.relay.send("executed", executed)
        closing = self._closing
        for type_, data in recorded:
            if type_ in _CLOSING:
                if closing is None:
                    self.relay.send(type_, data)
                closing = closing or (type_, data)
        # ComfyUI's last word on a prompt (its history entry is written): last here too.
        self.relay.send("executing", shapes.executing(None, self.id))
        times = {t: d.get("timestamp") for t, d in recorded if isinstance(d, dict)}
        start = self._start_ts or times.get("execution_start")
        end = closing[1].get("timestamp") if closing else None
        gpu_ms = int(end - start) if isinstance(start, int) and isinstance(end, int) else None
        history = {"status": entry.get("status"), "meta": entry.get("meta")}
        if closing is None or closing[0] == "execution_success":
            if status.get("status_str") == "error" and closing is None:
                error = comfy_error("execution_error", "ComfyUI reported an error")
                return Outcome("fail", error=error, gpu_ms=gpu_ms, history=history)
            return Outcome("complete", outputs=outputs, gpu_ms=gpu_ms, history=history)
        type_, data = closing
        # A GPU out of memory may pass on another worker (or later): retried, an attempt spent.
        retry = type_ == "execution_error" and str(data.get("exception_type", "")).endswith(
            "OutOfMemoryError"
        )
        return Outcome("fail", error=data, retry=retry, gpu_ms=gpu_ms, history=history)

    def _handed_back(self, reason: str) -> Outcome:
        """ComfyUI died: requeue the job. The running one spends an attempt."""
        running = self.phase is Phase.RUNNING or (
            self.phase is Phase.SUBMITTED and self.shared.is_head(self)
        )
        log.warning("ComfyUI lost the job", job=self.id, reason=reason, was_running=running)
        if running:
            return Outcome("fail", error=_host_error("comfyui_died", reason), retry=True)
        return Outcome("release")

    async def _withdraw(self) -> None:
        """Take a job that stops here out of ComfyUI (best effort: it may be gone)."""
        if self.phase is Phase.PREPARING:
            return
        try:
            await self.shared.comfy.delete_pending(self.id)
            await self.shared.comfy.interrupt(self.id)
        except (ComfyDown, ComfyError):
            pass

    async def _report(self, outcome: Outcome) -> None:
        """Tell the queue (retried while it is unreachable; a 409 means it already knows)."""
        queue, action = self.shared.queue, outcome.action
        if action == "drop":
            log.warning("job dropped: the lease is lost", job=self.id)
            return
        body: dict[str, Any] = {}
        if action == "complete":
            body = {"outputs": outcome.outputs, "gpu_ms": outcome.gpu_ms,
                    "history": outcome.history}  # fmt: skip
        elif action == "fail":
            body = {"error": outcome.error, "retry": outcome.retry, "gpu_ms": outcome.gpu_ms,
                    "history": outcome.history}  # fmt: skip
        elif action == "decline":
            body = {"error": outcome.error}
        try:
            answer = await queue.retrying(
                lambda: queue.job_call(self.id, action, self.lease_id, **body), REPORT_RETRY_S
            )
        except LeaseLost:
            log.warning("report refused: the lease was lost", job=self.id, action=action)
            return
        except (QueueUnavailable, QueueRefused) as exc:
            log.error("report not delivered", job=self.id, action=action, error=str(exc))
            return
        state = (answer or {}).get("state", "succeeded" if action == "complete" else None)
        log.info("job reported", job=self.id, action=action, state=state, gpu_ms=outcome.gpu_ms)


def _cancelled() -> dict[str, Any]:
    return comfy_error("cancelled", "the job was cancelled before ComfyUI ran it")


def _host_error(type_: str, exc: BaseException | str) -> dict[str, Any]:
    """An error of this worker's host (not of the graph), in ComfyUI's error shape."""
    messages = {
        "comfyui_died": "ComfyUI stopped while running the job; it goes back to the queue",
        "worker_error": "the worker failed to run the job; it goes back to the queue",
    }
    return comfy_error(type_, messages.get(type_, type_), str(exc))
