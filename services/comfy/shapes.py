"""ComfyUI 0.3.64's response bodies and WebSocket messages, as builders.

Both the test double and the gateway answer in these shapes, so they are written once:

- `POST /prompt` 200: `{"prompt_id", "number", "node_errors"}`; 400: `validation`'s bodies.
- `GET /prompt`: `{"exec_info": {"queue_remaining": n}}`; the `status` message carries the
  same under `"status"` (plus `"sid"` in the first message on a socket).
- `GET /queue`: `{"queue_running": [entry], "queue_pending": [entry]}` where an entry is the
  list `[number, prompt_id, prompt, extra_data, outputs_to_execute]`.
- `GET /history[/{id}]`: `{prompt_id: {"prompt": entry, "outputs": {node_id: ui},
  "status": {"status_str", "completed", "messages"}, "meta": {node_id: meta}}}`.
- WebSocket messages are `{"type": t, "data": {...}}`; the execution ones are built here.
"""

from __future__ import annotations

from typing import Any

#: `extra_data` keys ComfyUI drops before an entry reaches `/history`.
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")

#: Binary WebSocket frame types (the first 4 bytes, big-endian).
PREVIEW_IMAGE = 1
UNENCODED_PREVIEW_IMAGE = 2
TEXT = 3
PREVIEW_IMAGE_WITH_METADATA = 4
#: The image format code after the frame type in a PREVIEW_IMAGE frame.
PREVIEW_FORMAT_CODES = {"JPEG": 1, "PNG": 2}


def message(type_: str, data: Any) -> dict[str, Any]:
    return {"type": type_, "data": data}


def queue_info(queue_remaining: int) -> dict[str, Any]:
    """`GET /prompt`'s body, and the `status` of a `status` message."""
    return {"exec_info": {"queue_remaining": queue_remaining}}


def status_message(queue_remaining: int, sid: str | None = None) -> dict[str, Any]:
    """`status`: sent to all sockets on every queue change; with `sid` to a new socket."""
    data: dict[str, Any] = {"status": queue_info(queue_remaining)}
    if sid is not None:
        data["sid"] = sid
    return message("status", data)


def prompt_response(prompt_id: str, number: int | float, node_errors: dict | None = None) -> dict:
    """`POST /prompt`'s 200 body (`node_errors` lists the outputs that will not run)."""
    return {"prompt_id": prompt_id, "number": number, "node_errors": node_errors or {}}


def queue_entry(
    number: int | float,
    prompt_id: str,
    prompt: dict,
    extra_data: dict,
    outputs_to_execute: list[str],
) -> list[Any]:
    """One `/queue` entry, also the `prompt` of a history entry."""
    return [number, prompt_id, prompt, extra_data, list(outputs_to_execute)]


def queue_body(running: list[list[Any]], pending: list[list[Any]]) -> dict[str, Any]:
    return {"queue_running": running, "queue_pending": pending}


def history_extra_data(extra_data: dict) -> dict:
    """`extra_data` as history keeps it: without the Comfy.org credentials."""
    return {k: v for k, v in extra_data.items() if k not in SENSITIVE_EXTRA_DATA_KEYS}


def node_meta(
    node_id: str,
    display_node: str | None = None,
    parent_node: str | None = None,
    real_node_id: str | None = None,
) -> dict[str, Any]:
    """A history entry's `meta` for one output node."""
    return {
        "node_id": node_id,
        "display_node": display_node or node_id,
        "parent_node": parent_node,
        "real_node_id": real_node_id or node_id,
    }


def history_status(success: bool, messages: list[tuple[str, dict]]) -> dict[str, Any]:
    """A history entry's `status`: `messages` are the `(type, data)` of execution_start,
    execution_cached and the closing execution_success/_error/_interrupted."""
    return {
        "status_str": "success" if success else "error",
        "completed": success,
        "messages": [[t, d] for t, d in messages],
    }


def history_entry(
    entry: list[Any], outputs: dict[str, Any], status: dict[str, Any] | None, meta: dict[str, Any]
) -> dict[str, Any]:
    """One `/history` value; `entry` is the queue entry the prompt ran as."""
    number, prompt_id, prompt, extra_data, outputs_to_execute = entry
    return {
        "prompt": queue_entry(
            number, prompt_id, prompt, history_extra_data(extra_data), outputs_to_execute
        ),
        "outputs": outputs,
        "status": status,
        "meta": meta,
    }


def file_entry(filename: str, subfolder: str, type_: str) -> dict[str, str]:
    """An output file as `executed`, `/history` and `/view` name it."""
    return {"filename": filename, "subfolder": subfolder, "type": type_}


# -- execution messages (data of each WebSocket message type) ----------------------------------


def execution_start(prompt_id: str, timestamp: int) -> dict[str, Any]:
    return {"prompt_id": prompt_id, "timestamp": timestamp}


def execution_cached(nodes: list[str], prompt_id: str, timestamp: int) -> dict[str, Any]:
    return {"nodes": nodes, "prompt_id": prompt_id, "timestamp": timestamp}


def executing(node: str | None, prompt_id: str, display_node: str | None = None) -> dict[str, Any]:
    """`executing`: a node starts; `node=None` closes the prompt (no `display_node` then)."""
    if node is None:
        return {"node": None, "prompt_id": prompt_id}
    return {"node": node, "display_node": display_node or node, "prompt_id": prompt_id}


def executed(node: str, output: Any, prompt_id: str, display_node: str | None = None) -> dict:
    return {
        "node": node,
        "display_node": display_node or node,
        "output": output,
        "prompt_id": prompt_id,
    }


def progress(value: int | float, max_: int | float, prompt_id: str, node: str) -> dict[str, Any]:
    return {"value": value, "max": max_, "prompt_id": prompt_id, "node": node}


def progress_node(
    node_id: str, prompt_id: str, value: int | float, max_: int | float, state: str
) -> dict[str, Any]:
    """One node of a `progress_state` message (`state`: running, finished, error)."""
    return {
        "value": value,
        "max": max_,
        "state": state,
        "node_id": node_id,
        "prompt_id": prompt_id,
        "display_node_id": node_id,
        "parent_node_id": None,
        "real_node_id": node_id,
    }


def progress_state(prompt_id: str, nodes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"prompt_id": prompt_id, "nodes": nodes}


#: `execution_success`'s data has the same shape as `execution_start`'s.
execution_success = execution_start


def _stopped_at(prompt_id: str, node_id: str, node_type: str, executed_nodes: list[str]) -> dict:
    """What `execution_interrupted` and `execution_error` both start with."""
    return {
        "prompt_id": prompt_id,
        "node_id": node_id,
        "node_type": node_type,
        "executed": executed_nodes,
    }


def execution_interrupted(
    prompt_id: str, node_id: str, node_type: str, executed_nodes: list[str], timestamp: int
) -> dict[str, Any]:
    """`executed` lists the nodes that ran before the interrupt (ComfyUI: in set order)."""
    return {**_stopped_at(prompt_id, node_id, node_type, executed_nodes), "timestamp": timestamp}


def execution_error(
    prompt_id: str,
    node_id: str,
    node_type: str,
    executed_nodes: list[str],
    *,
    exception_message: str,
    exception_type: str,
    traceback: list[str],
    current_inputs: dict[str, list[Any]],
    current_outputs: list[str],
    timestamp: int,
) -> dict[str, Any]:
    return {
        **_stopped_at(prompt_id, node_id, node_type, executed_nodes),
        "exception_message": exception_message,
        "exception_type": exception_type,
        "traceback": traceback,
        "current_inputs": current_inputs,
        "current_outputs": current_outputs,
        "timestamp": timestamp,
    }


def preview_metadata(node_id: str, prompt_id: str, image_type: str) -> dict[str, Any]:
    """The JSON header of a PREVIEW_IMAGE_WITH_METADATA frame."""
    return {
        "node_id": node_id,
        "prompt_id": prompt_id,
        "display_node_id": node_id,
        "parent_node_id": None,
        "real_node_id": node_id,
        "image_type": image_type,
    }
