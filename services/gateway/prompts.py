"""ComfyUI's job routes over the shared queue: `/prompt`, `/queue`, `/history`, `/interrupt`,
for this participant's jobs only.

A prompt is validated here, before it is queued, exactly as ComfyUI 0.3.64 validates it
(`services.comfy.validation`), against the pool's catalogue with the upload widgets listing
this participant's own files; its id is the participant's `prompt_id` if they chose one,
else a fresh UUID (brief 5.0). A partially valid prompt (HTTP 200 with `node_errors`) is
queued with only the nodes its valid outputs need, so the worker's ComfyUI runs exactly what
ComfyUI would have run. `/queue` and `/history` are built from the queue's job records in
ComfyUI's shapes (`services.comfy.shapes`).

`front: true` (the frontend's "Queue Front", ComfyUI's API field) is passed to the queue only
for an instructor or the admin (the queue's front lane: ahead of every participant's waiting
job, as an admin's bump). A participant's `front` is ignored: the prompt is queued in its
normal place and answered 200 as usual. ComfyUI itself never refuses `front` (it only moves a
prompt ahead of its single user's own queue), so an error would be a refusal ComfyUI's
clients do not expect; and in a shared queue "ahead of me" would mean ahead of the others.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from services.comfy import catalog as cat
from services.comfy import shapes
from services.comfy.validation import NO_PROMPT_ERROR, MalformedPrompt, is_link, validate_prompt
from services.contracts import JOB_ID_PATTERN, JobState, Role
from services.gateway import responses
from services.gateway.context import Gateway, Space, params
from services.gateway.queue_client import QueueRefused
from services.gateway.requests import int_param, read_json

_JOB_ID = re.compile(JOB_ID_PATTERN)
_LISTING_LIMIT = 500
#: A job is running in ComfyUI's sense once its ComfyUI began it (`execution_start` relayed);
#: a leased job may still wait in its worker's ComfyUI queue (prefetched): it is pending,
#: can be deleted from /queue, and /interrupt leaves it alone, as ComfyUI would.
RUNNING_STATES = (JobState.RUNNING,)
PENDING_STATES = (JobState.QUEUED, JobState.LEASED)
_ANNOTATION = re.compile(r"^(.*) \[(input|output|temp)\]$")


# -- reading jobs from the queue ------------------------------------------------------------
async def live_jobs(gw: Gateway, space: Space, workflow: bool = False) -> list[dict[str, Any]]:
    """This participant's queued and running jobs, oldest first."""
    return await gw.queue.json(  # type: ignore[no-any-return]
        "GET", "/api/jobs", space.token,
        params=params(space, state="live", limit=_LISTING_LIMIT,
                      workflow="true" if workflow else None),
    )  # fmt: skip


async def queue_remaining(gw: Gateway, space: Space) -> int:
    """ComfyUI's `queue_remaining`: this participant's queued and running jobs."""
    response = await gw.queue.call(
        "GET", "/api/jobs", space.token, params=params(space, state="live", limit=1)
    )
    if response.status_code >= 400:
        raise QueueRefused(response.status_code, response.text[:200])
    return int(response.headers.get("X-Total-Count", "0"))


def public_outputs(value: Any) -> Any:
    """Job outputs as a participant sees them: the worker's object `key`s dropped."""
    if isinstance(value, dict):
        return {
            k: public_outputs(v) for k, v in value.items() if k != "key" or "filename" not in value
        }
    if isinstance(value, list):
        return [public_outputs(v) for v in value]
    return value


def outputs_to_execute(prompt: dict[str, Any], nodes: cat.Catalog) -> list[str]:
    """The output nodes of a stored prompt (in the order validation walks them)."""
    found = [
        node_id
        for node_id, node in prompt.items()
        if isinstance(node, dict) and cat.is_output_node(nodes.get(node.get("class_type"), {}))
    ]
    return list(reversed(found))


def entry(job: dict[str, Any], nodes: cat.Catalog) -> list[Any]:
    """A job as a `/queue` entry (and the `prompt` of its history entry)."""
    workflow = job.get("workflow") or {}
    return shapes.queue_entry(
        job.get("number") or 0,
        job["id"],
        workflow,
        job.get("extra_data") or {},
        outputs_to_execute(workflow, nodes),
    )


def history_status(job: dict[str, Any]) -> dict[str, Any]:
    """ComfyUI's history `status`: the worker's, or, for a job that never reached a worker's
    ComfyUI (failed by the queue, say), one built from the record."""
    recorded = (job.get("history") or {}).get("status")
    if recorded:
        return recorded  # type: ignore[no-any-return]
    job_id = job["id"]
    start = job.get("started_at") or job.get("leased_at") or job["queued_at"]
    messages: list[tuple[str, dict]] = [("execution_start", shapes.execution_start(job_id, start))]
    state = job["state"]
    end = job.get("finished_at") or start
    if state == JobState.SUCCEEDED:
        messages.append(("execution_success", shapes.execution_success(job_id, end)))
    elif state == JobState.CANCELLED:
        messages.append(
            ("execution_interrupted", shapes.execution_interrupted(job_id, "", "", [], end))
        )
    else:
        messages.append(("execution_error", synthesized_error(job)))
    return shapes.history_status(state == JobState.SUCCEEDED, messages)


def synthesized_error(job: dict[str, Any]) -> dict[str, Any]:
    """An `execution_error` for a job that failed without its worker saying so (its attempts
    used up, no worker could run it): the error the queue recorded, in ComfyUI's shape."""
    error = job.get("error") or {}
    if "exception_message" in error:
        return {**error, "prompt_id": job["id"]}
    message = str(error.get("message") or error.get("type") or "the job failed")
    return shapes.execution_error(
        job["id"], str(error.get("node_id", "")), str(error.get("node_type", "")), [],
        exception_message=message, exception_type=str(error.get("type", "WorkshopError")),
        traceback=[], current_inputs={}, current_outputs=[],
        timestamp=job.get("finished_at") or job["queued_at"],
    )  # fmt: skip


def in_history(job: dict[str, Any]) -> bool:
    """ComfyUI's history holds the prompts that ran (or failed): not those deleted from the
    queue before they started."""
    return not (job["state"] == JobState.CANCELLED and job.get("started_at") is None)


def history_entry(job: dict[str, Any], nodes: cat.Catalog) -> dict[str, Any]:
    return shapes.history_entry(
        entry(job, nodes),
        public_outputs(job.get("outputs") or {}),
        history_status(job),
        (job.get("history") or {}).get("meta") or {},
    )


# -- routes -------------------------------------------------------------------------------
async def get_prompt(request: Request, gw: Gateway, space: Space) -> Response:
    return responses.json(shapes.queue_info(await queue_remaining(gw, space)))


def _file_exists(names: set[str]) -> Any:
    def exists(annotated: str) -> bool:
        m = _ANNOTATION.match(annotated)
        if m and m[2] != "input":
            return False  # outputs are keyed by job: not loadable by name
        return (m[1] if m else annotated) in names

    return exists


def prune(prompt: dict[str, Any], outputs: list[str]) -> dict[str, Any]:
    """The nodes `outputs` depend on (themselves included), in the prompt's order."""
    needed: set[str] = set()
    stack = list(outputs)
    while stack:
        node_id = stack.pop()
        if node_id in needed or node_id not in prompt:
            continue
        needed.add(node_id)
        for value in (prompt[node_id].get("inputs") or {}).values():
            if is_link(value):
                stack.append(str(value[0]))
    return {k: v for k, v in prompt.items() if k in needed}


async def post_prompt(request: Request, gw: Gateway, space: Space) -> Response:
    try:
        body = await read_json(request, gw.settings.max_json_bytes)
    except ValueError as exc:
        return responses.prompt_error(
            "invalid_prompt", "The request body is not valid JSON", str(exc)
        )
    if not isinstance(body, dict):
        return responses.prompt_error("invalid_prompt", "The request body must be a JSON object")
    if "prompt" not in body:
        return responses.json({"error": NO_PROMPT_ERROR, "node_errors": {}}, 400)
    prompt = body["prompt"]
    prompt_id = str(body["prompt_id"]) if body.get("prompt_id") is not None else str(uuid.uuid4())
    if not _JOB_ID.match(prompt_id):
        return responses.prompt_error(
            "invalid_prompt", "Invalid prompt_id",
            "use up to 64 letters, digits, '.', '_' or '-', or a UUID",
        )  # fmt: skip
    targets = body.get("partial_execution_targets")
    if targets is not None and not (
        isinstance(targets, list) and all(isinstance(t, str) for t in targets)
    ):
        return responses.prompt_error(
            "invalid_prompt", "partial_execution_targets must be a list of node ids"
        )
    extra_data = body.get("extra_data") or {}
    if not isinstance(extra_data, dict):
        return responses.prompt_error("invalid_prompt", "extra_data must be a JSON object")
    client_id = body.get("client_id")
    if client_id is not None:
        if not isinstance(client_id, str) or len(client_id) > 128:
            return responses.prompt_error("invalid_prompt", "client_id must be a short string")
        extra_data["client_id"] = client_id

    nodes = await gw.catalog.current(space.token)
    if not nodes:
        return responses.prompt_error(
            "no_workers", "No GPU worker has connected yet",
            "the workshop's GPU workers have not reported their nodes; try again shortly",
        )  # fmt: skip
    combo, names = await space.uploads(gw)
    catalog = gw.catalog.for_participant(nodes, combo)
    try:
        result = validate_prompt(
            prompt, catalog, partial_execution_targets=targets,
            file_exists=_file_exists(names), tracebacks=False,
        )  # fmt: skip
    except MalformedPrompt as exc:
        return responses.prompt_error("invalid_prompt", "Cannot execute the prompt", str(exc))
    if not result.ok:
        return responses.json(result.error_body(), 400)
    workflow = prune(prompt, result.outputs) if (result.node_errors or targets) else prompt

    submit: dict[str, Any] = {"workflow": workflow, "job_id": prompt_id, "extra_data": extra_data}
    if client_id is not None:
        submit["client_id"] = client_id
    if body.get("front") and space.caller.role in (Role.INSTRUCTOR, Role.ADMIN):
        submit["front"] = True  # a participant's front is ignored: see the module docstring
    if space.acting_for:
        submit["user"] = space.name
    try:
        job = await gw.queue.json("POST", "/api/jobs", space.token, json=submit)
    except QueueRefused as exc:
        if exc.status == 409:
            return responses.prompt_error("invalid_prompt", "prompt_id already in use", exc.detail)
        if exc.status == 429:
            return responses.prompt_error("queue_limit", "Too many queued prompts", exc.detail, 429)
        if exc.status in (400, 413, 422):
            return responses.prompt_error(
                "invalid_prompt", "The queue refused the prompt", exc.detail
            )
        raise
    return responses.json(shapes.prompt_response(job["id"], job["number"], result.node_errors))


async def get_queue(request: Request, gw: Gateway, space: Space) -> Response:
    jobs = await live_jobs(gw, space, workflow=True)
    nodes = await gw.catalog.current(space.token)
    running = [entry(j, nodes) for j in jobs if j["state"] in RUNNING_STATES]
    pending = [entry(j, nodes) for j in jobs if j["state"] in PENDING_STATES]
    return responses.json(shapes.queue_body(running, pending))


async def _cancel(gw: Gateway, space: Space, job_ids: list[str]) -> None:
    for job_id in job_ids:
        try:
            await gw.queue.json("POST", f"/api/jobs/{job_id}/cancel", space.token)
        except QueueRefused as exc:
            if exc.status not in (404, 409):  # gone or ended meanwhile: as ComfyUI, no error
                raise


async def _json_object(request: Request, gw: Gateway) -> dict[str, Any] | None:
    """The body as a JSON object, or None (ComfyUI's bare 400)."""
    try:
        body = await read_json(request, gw.settings.max_json_bytes)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


async def post_queue(request: Request, gw: Gateway, space: Space) -> Response:
    """`{"clear": true}` empties this participant's pending jobs, `{"delete": [ids]}` deletes
    some of them; running ones are left alone (ComfyUI's /interrupt stops those)."""
    body = await _json_object(request, gw)
    if body is None:
        return responses.empty(400)
    pending = [j["id"] for j in await live_jobs(gw, space) if j["state"] in PENDING_STATES]
    doomed: list[str] = []
    if body.get("clear"):
        doomed = pending
    delete = body.get("delete")
    if isinstance(delete, list):
        doomed += [i for i in pending if i in {str(d) for d in delete} and i not in doomed]
    await _cancel(gw, space, doomed)
    return responses.empty(200)


async def post_interrupt(request: Request, gw: Gateway, space: Space) -> Response:
    """Stop this participant's running job (all of them, or the one named by `prompt_id`;
    naming one that is not running does nothing, as in ComfyUI)."""
    try:
        body = await read_json(request, gw.settings.max_json_bytes, empty={})
    except ValueError:
        body = {}
    wanted = body.get("prompt_id") if isinstance(body, dict) else None
    running = [j["id"] for j in await live_jobs(gw, space) if j["state"] in RUNNING_STATES]
    await _cancel(gw, space, [i for i in running if not wanted or i == wanted])
    return responses.empty(200)


async def get_history(request: Request, gw: Gateway, space: Space) -> Response:
    """ComfyUI's paging: `max_items` newest, or `max_items` from `offset` counted from the
    oldest; the result oldest first."""
    try:
        max_items, offset = int_param(request, "max_items"), int_param(request, "offset")
    except ValueError:
        return responses.empty(400)
    offset = -1 if offset is None else offset
    first = await gw.queue.call(
        "GET", "/api/jobs", space.token, params=params(space, state="finished", limit=1)
    )
    if first.status_code >= 400:
        raise QueueRefused(first.status_code, first.text[:200])
    total = int(first.headers.get("X-Total-Count", "0"))
    if max_items is not None and max_items <= 0:
        return responses.json({})
    if offset < 0:
        newest_skip, count = 0, (max_items if max_items is not None else total)
    else:
        end = total - offset  # in newest-first terms
        start = max(0, end - max_items) if max_items is not None else 0
        newest_skip, count = start, max(0, end - start)
    count = min(count, _LISTING_LIMIT)
    if count <= 0 or total == 0:
        return responses.json({})
    jobs = await gw.queue.json(
        "GET", "/api/jobs", space.token,
        params=params(space, state="finished", limit=count, offset=newest_skip, workflow="true"),
    )  # fmt: skip
    nodes = await gw.catalog.current(space.token)
    return responses.json(
        {j["id"]: history_entry(j, nodes) for j in reversed(jobs) if in_history(j)}
    )


async def get_history_item(request: Request, gw: Gateway, space: Space, prompt_id: str) -> Response:
    if not _JOB_ID.match(prompt_id):
        return responses.json({})  # no prompt can have that id (ComfyUI: not in its history)
    try:
        job = await gw.queue.json(
            "GET", f"/api/jobs/{prompt_id}", space.token, params={"workflow": "true"}
        )
    except QueueRefused as exc:
        if exc.status in (404, 422):
            return responses.json({})
        raise
    if job["user"] != space.name or job["state"] in {
        s.value for s in (*PENDING_STATES, *RUNNING_STATES)
    }:
        return responses.json({})
    if not in_history(job):
        return responses.json({})
    nodes = await gw.catalog.current(space.token)
    return responses.json({job["id"]: history_entry(job, nodes)})


async def post_history(request: Request, gw: Gateway, space: Space) -> Response:
    body = await _json_object(request, gw)
    if body is None:
        return responses.empty(400)
    if body.get("clear"):
        await gw.queue.json(
            "DELETE", "/api/jobs", space.token, params=params(space, state="finished")
        )
    delete = body.get("delete")
    if isinstance(delete, list):
        for job_id in delete:
            if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
                continue
            response = await gw.queue.call("DELETE", f"/api/jobs/{job_id}", space.token)
            if response.status_code >= 400 and response.status_code not in (404, 409):
                raise QueueRefused(response.status_code, response.text[:200])
    return responses.empty(200)
