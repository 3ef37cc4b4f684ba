"""Reading a workflow file for `push-workflow`: ComfyUI's UI format (what "Save" writes:
nodes and links) or its API format (what "Export (API)" writes: {node id: {class_type,
inputs}}); the frontend extension loads either onto the canvas."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from services.cli.client import CliError

MAX_BYTES = 16 * 1024 * 1024


def kind(workflow: Any) -> str | None:
    """"ui", "api", or None for neither."""
    if not isinstance(workflow, dict) or not workflow:
        return None
    if isinstance(workflow.get("nodes"), list) and isinstance(workflow.get("links"), list):
        return "ui"
    if all(
        isinstance(node, dict) and isinstance(node.get("class_type"), str)
        and isinstance(node.get("inputs", {}), dict)
        for node in workflow.values()
    ):
        return "api"
    return None


def load(path: str) -> tuple[dict[str, Any], str]:
    """The workflow and its format, or a CliError saying what is wrong with the file."""
    file = Path(path)
    try:
        if file.stat().st_size > MAX_BYTES:
            raise CliError(f"{path}: larger than {MAX_BYTES // 2**20} MiB, not a workflow")
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise CliError(f"{path}: no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{path}: cannot be read ({exc})") from exc
    try:
        workflow = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(
            f"{path} is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    found = kind(workflow)
    if found is None:
        raise CliError(
            f"{path} is not a ComfyUI workflow: expected the UI format (an object with "
            '"nodes" and "links", from Save) or the API format ({"<node id>": {"class_type": '
            '..., "inputs": {...}}}, from Export (API))'
        )
    return workflow, found
