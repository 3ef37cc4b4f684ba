"""Shape check for ComfyUI API-format workflows: ``{node_id: {class_type, inputs}}``.

The queue does not know which node classes exist (the worker's ComfyUI validates that, and
reports errors in its own shape). It rejects what can never run: non-graphs, UI-format
exports, nodes without a class, and links to nodes that are not in the graph.
"""

from __future__ import annotations

from typing import Any

MAX_NODES = 5_000


class GraphError(ValueError):
    """The workflow is not an API-format graph; the message says why."""


def _is_link(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )


def validate_workflow(workflow: Any) -> None:
    """Raise GraphError with a message a participant can act on."""
    if not isinstance(workflow, dict):
        raise GraphError("workflow must be a JSON object of nodes keyed by node id")
    if "nodes" in workflow and "links" in workflow:
        raise GraphError(
            "this is a UI-format workflow (it has 'nodes' and 'links'); "
            "send the API format (ComfyUI: Workflow > Export (API))"
        )
    if not workflow:
        raise GraphError("workflow has no nodes")
    if len(workflow) > MAX_NODES:
        raise GraphError(f"workflow has {len(workflow)} nodes; the limit is {MAX_NODES}")
    for node_id, node in workflow.items():
        if not isinstance(node, dict):
            raise GraphError(f"node {node_id!r} must be an object with class_type and inputs")
        class_type = node.get("class_type")
        if not isinstance(class_type, str) or not class_type:
            raise GraphError(f"node {node_id!r} has no class_type")
        inputs = node.get("inputs", {})
        if not isinstance(inputs, dict):
            raise GraphError(f"node {node_id!r}: inputs must be an object")
        for name, value in inputs.items():
            if _is_link(value) and value[0] not in workflow:
                raise GraphError(
                    f"node {node_id!r} input {name!r} links to node {value[0]!r}, "
                    "which is not in the workflow"
                )


def is_ui_format(workflow: Any) -> bool:
    """A workflow as the ComfyUI frontend saves it: lists of nodes and links (the frontend
    extension loads it with loadGraphData; anything else goes through loadApiJson)."""
    return (
        isinstance(workflow, dict)
        and isinstance(workflow.get("nodes"), list)
        and isinstance(workflow.get("links"), list)
    )


def validate_canvas_workflow(workflow: Any) -> None:
    """What an admin may push onto participants' canvases: the UI format, or an API-format
    graph (checked as a submitted one is). Raise GraphError saying why not."""
    if is_ui_format(workflow):
        if len(workflow["nodes"]) > MAX_NODES:
            raise GraphError(f"workflow has more than {MAX_NODES} nodes")
        return
    if isinstance(workflow, dict) and ("nodes" in workflow or "links" in workflow):
        raise GraphError("a UI-format workflow needs both 'nodes' and 'links' as lists")
    validate_workflow(workflow)
