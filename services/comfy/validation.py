"""`POST /prompt` validation with ComfyUI 0.3.64's semantics and error shapes.

ComfyUI validates a prompt (an API-format graph, `{node_id: {"class_type", "inputs"}}`) before
queueing it, starting from its output nodes and walking their inputs upstream:

- a node without `class_type`, or of a class the server does not have, rejects the whole
  prompt at once (`invalid_prompt`, no `node_errors`); so does a prompt without output nodes
  (`prompt_no_outputs`);
- otherwise each output is valid or not on its own. Nodes no output depends on are never
  looked at. If at least one output is valid the prompt is accepted (HTTP 200) and only the
  valid outputs run; the others' errors come back in `node_errors` beside the prompt id. If
  none is valid: HTTP 400 `prompt_outputs_failed_validation`.
- widget values are converted in place (INT `int()`, FLOAT `float()`, STRING `str()`,
  BOOLEAN `bool()`), so `64.7` becomes `64` and `123` becomes `"123"`; then min/max and
  old-style combo lists are checked. New-style `"COMBO"` inputs are not checked (0.3.64 does
  not). A string where a link is expected passes (it fails at run time).
- links (`[node_id, output_index]`) are checked for the type they carry (`"*"` matches
  anything); a link to a missing node or output index is an exception during validation,
  reported as ComfyUI does (`exception_during_inner_validation` on the linked node,
  `exception_during_validation` on an output).
- the loader nodes with their own validation (`catalog.FILE_CHECKED_INPUTS`) check that the
  named file exists instead of checking the combo list: `custom_validation_failed`.
- a dependency cycle makes every node on it invalid without a reason: HTTP 400 with empty
  `node_errors` (ComfyUI recurses until Python's recursion limit and loses the reasons).

Two differences of order only: ComfyUI walks a node's inputs and the prompt's outputs in
Python-set order (random per process); this module walks inputs in declaration order
(required, then optional) and outputs in reverse prompt order.

The gateway validates a participant's prompt against the pool's catalogue with
`file_exists` answering for that participant's own uploads; the test double with its own
input folder.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from services.comfy import catalog as cat

#: `file_exists(annotated_name) -> bool`: whether an input file such as `"photo.png"`,
#: `"sub1/photo.png"` or `"out.png [output]"` exists for whoever submits the prompt.
FileExists = Callable[[str], bool]


class MalformedPrompt(Exception):
    """The prompt is not a graph at all (not an object of objects).

    ComfyUI answers these with a bare HTTP 500 (its handler raises); the double does the same,
    the gateway answers 400.
    """


@dataclass
class ValidationResult:
    """What ComfyUI's `validate_prompt` returns: `(ok, error, outputs, node_errors)`."""

    ok: bool
    error: dict[str, Any] | None
    outputs: list[str]
    node_errors: dict[str, Any] = field(default_factory=dict)

    def error_body(self) -> dict[str, Any]:
        """The HTTP 400 body: `{"error": {...}, "node_errors": {...}}`."""
        return {"error": self.error, "node_errors": self.node_errors}


def error(type_: str, message: str, details: str = "", extra_info: dict | None = None) -> dict:
    """ComfyUI's error object: `{type, message, details, extra_info}`."""
    return {"type": type_, "message": message, "details": details, "extra_info": extra_info or {}}


#: The 400 error for a `POST /prompt` body without a `prompt` key.
NO_PROMPT_ERROR = error("no_prompt", "No prompt provided", "No prompt provided")


def is_link(value: Any) -> bool:
    """ComfyUI's link test: `[str node_id, int output_index]`."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )


def types_match(received: Any, expected: Any) -> bool:
    """Whether an output of type `received` may feed an input of type `expected`.

    Comma-separated type lists match if they share a type; `"*"` (ComfyUI's AnyType) matches
    anything.
    """
    if received == expected or received == "*" or expected == "*":
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    return bool({t.strip() for t in received.split(",")} & {t.strip() for t in expected.split(",")})


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "INT": int,
    "FLOAT": float,
    "STRING": str,
    "BOOLEAN": bool,
}


class _Validator:
    def __init__(
        self,
        prompt: dict,
        catalog: cat.Catalog,
        file_exists: FileExists | None,
        tracebacks: bool = True,
    ):
        self.tracebacks = tracebacks
        self.prompt = prompt
        self.catalog = catalog
        self.file_exists = file_exists or (lambda _name: False)
        self.validated: dict[str, tuple[bool, list[dict]]] = {}
        self.in_progress: set[str] = set()

    def node(self, node_id: str) -> tuple[dict, dict]:
        """The node and its class info; a missing node raises KeyError like ComfyUI's."""
        node = self.prompt[node_id]
        return node, self.catalog[node["class_type"]]

    def validate(self, node_id: str) -> bool:
        """Validate `node_id` and everything it links to; record `(valid, reasons)`."""
        if node_id in self.validated:
            return self.validated[node_id][0]
        if node_id in self.in_progress:  # a cycle: invalid, and the reasons are lost
            return False
        self.in_progress.add(node_id)
        try:
            valid, errors = self._validate_inputs(node_id)
        finally:
            self.in_progress.discard(node_id)
        self.validated[node_id] = (valid and not errors, errors)
        return valid and not errors

    def _validate_inputs(self, node_id: str) -> tuple[bool, list[dict]]:
        node, info = self.node(node_id)
        inputs = node["inputs"]
        class_type = node["class_type"]
        checked_input = cat.FILE_CHECKED_INPUTS.get(class_type)
        errors: list[dict] = []
        valid = True
        for spec in cat.input_specs(info):
            name = spec.name
            if name not in inputs:
                if spec.category == "required":
                    errors.append(
                        error(
                            "required_input_missing",
                            "Required input is missing",
                            name,
                            {"input_name": name},
                        )
                    )
                continue
            value = inputs[name]
            if isinstance(value, list):
                outcome = self._check_link(name, spec, value)
                if isinstance(outcome, dict):
                    errors.append(outcome)
                elif outcome is False:
                    valid = False
                continue
            problem = self._check_value(
                inputs, spec, skip_limits=checked_input is not None and checked_input[0] == name
            )
            if problem is not None:
                errors.append(problem)
        if checked_input is not None:
            errors.extend(self._check_file(inputs, *checked_input))
        return valid, errors

    def _check_link(self, name: str, spec: cat.InputSpec, link: list) -> dict | bool:
        """An error, False (the linked node is invalid) or True."""
        if len(link) != 2:
            return error(
                "bad_linked_input",
                "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                name,
                {"input_name": name, "input_config": spec.config, "received_value": link},
            )
        source_id = link[0]
        _, source_info = self.node(source_id)  # KeyError: a link to a missing node
        received = cat.return_types(source_info)[link[1]]  # IndexError: a bad output index
        if not types_match(received, spec.type):
            return error(
                "return_type_mismatch",
                "Return type mismatch between linked nodes",
                f"{name}, received_type({received}) mismatch input_type({spec.type})",
                {
                    "input_name": name,
                    "input_config": spec.config,
                    "received_type": received,
                    "linked_node": link,
                },
            )
        try:
            return self.validate(source_id)
        except Exception as ex:
            reasons = [
                error(
                    "exception_during_inner_validation",
                    "Exception when validating inner node",
                    str(ex),
                    {
                        "input_name": name,
                        "input_config": spec.config,
                        "exception_message": str(ex),
                        "exception_type": _type_name(ex),
                        "traceback": _traceback(ex, self.tracebacks),
                        "linked_node": link,
                    },
                )
            ]
            self.validated[source_id] = (False, reasons)
            return False

    def _check_value(self, inputs: dict, spec: cat.InputSpec, skip_limits: bool) -> dict | None:
        name = spec.name
        value = inputs[name]
        if isinstance(value, dict) and "__value__" in value:
            value = inputs[name] = value["__value__"]
        convert = _CONVERTERS.get(spec.type) if isinstance(spec.type, str) else None
        if convert is not None:
            try:
                value = inputs[name] = convert(value)
            except Exception as ex:
                return error(
                    "invalid_input_type",
                    f"Failed to convert an input value to a {spec.type} value",
                    f"{name}, {value}, {ex}",
                    {
                        "input_name": name,
                        "input_config": spec.config,
                        "received_value": value,
                        "exception_message": str(ex),
                    },
                )
        if skip_limits:
            return None
        limits = spec.options
        if "min" in limits and value < limits["min"]:
            return error(
                "value_smaller_than_min",
                f"Value {value} smaller than min of {limits['min']}",
                name,
                {"input_name": name, "input_config": spec.config, "received_value": value},
            )
        if "max" in limits and value > limits["max"]:
            return error(
                "value_bigger_than_max",
                f"Value {value} bigger than max of {limits['max']}",
                name,
                {"input_name": name, "input_config": spec.config, "received_value": value},
            )
        if isinstance(spec.type, list) and value not in spec.type:
            many = len(spec.type) > 20  # ComfyUI does not echo long lists such as model files
            listed = f"(list of length {len(spec.type)})" if many else str(spec.type)
            return error(
                "value_not_in_list",
                "Value not in list",
                f"{name}: '{value}' not in {listed}",
                {
                    "input_name": name,
                    "input_config": None if many else spec.config,
                    "received_value": value,
                },
            )
        return None

    def _check_file(self, inputs: dict, name: str, message: str) -> list[dict]:
        if name not in inputs:
            return []
        value = inputs[name]
        if is_link(value):  # ComfyUI passes None for a link here, and fails on it
            raise AttributeError("'NoneType' object has no attribute 'endswith'")
        if self.file_exists(value):
            return []
        return [
            error(
                "custom_validation_failed",
                "Custom validation failed for node",
                f"{name} - {message.format(value)}",
                {"input_name": name},
            )
        ]


def _traceback(ex: BaseException, include: bool) -> list[str]:
    """The exception's frames as ComfyUI lists them, or [] to keep server paths private."""
    return traceback.format_tb(ex.__traceback__) if include else []


def _type_name(ex: BaseException) -> str:
    """ComfyUI's `full_type_name`: builtins bare, others with their module."""
    klass = type(ex)
    return (
        klass.__qualname__
        if klass.__module__ == "builtins"
        else f"{klass.__module__}.{klass.__qualname__}"
    )


def output_nodes(
    prompt: Mapping[str, Any],
    catalog: cat.Catalog,
    partial_execution_targets: list[str] | None = None,
) -> list[str]:
    """The prompt's output nodes that would run, in the order this module validates them."""
    outputs = [
        node_id
        for node_id, node in prompt.items()
        if cat.is_output_node(catalog[node["class_type"]])
        and (partial_execution_targets is None or node_id in partial_execution_targets)
    ]
    return list(reversed(outputs))


def validate_prompt(
    prompt: Any,
    catalog: cat.Catalog,
    *,
    partial_execution_targets: list[str] | None = None,
    file_exists: FileExists | None = None,
    tracebacks: bool = True,
) -> ValidationResult:
    """Validate `prompt` like ComfyUI's `POST /prompt`; converts widget values in place.

    `tracebacks=False` leaves the `traceback` lists of validation exceptions empty (the
    gateway: they would name its source files).

    Raises `MalformedPrompt` where ComfyUI fails with HTTP 500 (a prompt that is not an
    object, or a node that is not an object).
    """
    if not isinstance(prompt, dict) or not all(isinstance(n, dict) for n in prompt.values()):
        raise MalformedPrompt("the prompt must be an object of node objects")
    for node_id, node in prompt.items():
        if "class_type" not in node:
            return ValidationResult(
                False,
                error(
                    "invalid_prompt",
                    "Cannot execute because a node is missing the class_type property.",
                    f"Node ID '#{node_id}'",
                ),
                [],
                {},
            )
        class_type = node["class_type"]
        if not isinstance(class_type, str) or class_type not in catalog:
            return ValidationResult(
                False,
                error(
                    "invalid_prompt",
                    f"Cannot execute because node {class_type} does not exist.",
                    f"Node ID '#{node_id}'",
                ),
                [],
                {},
            )
    outputs = output_nodes(prompt, catalog, partial_execution_targets)
    if not outputs:
        return ValidationResult(False, error("prompt_no_outputs", "Prompt has no outputs"), [], {})

    validator = _Validator(prompt, catalog, file_exists, tracebacks)
    good: list[str] = []
    failures: list[tuple[str, list[dict]]] = []
    node_errors: dict[str, Any] = {}
    for output_id in outputs:
        try:
            valid = validator.validate(output_id)
            reasons = validator.validated[output_id][1]
        except Exception as ex:
            valid = False
            reasons = [
                error(
                    "exception_during_validation",
                    "Exception when validating node",
                    str(ex),
                    {
                        "exception_type": _type_name(ex),
                        "traceback": _traceback(ex, tracebacks),
                    },
                )
            ]
            validator.validated[output_id] = (False, reasons)
        if valid:
            good.append(output_id)
            continue
        failures.append((output_id, reasons))
        # Like ComfyUI, every node validated so far that has reasons counts this output as
        # dependent, whether or not it is upstream of it.
        for node_id, (node_valid, node_reasons) in validator.validated.items():
            if node_valid or not node_reasons:
                continue
            entry = node_errors.setdefault(
                node_id,
                {
                    "errors": node_reasons,
                    "dependent_outputs": [],
                    "class_type": prompt[node_id]["class_type"],
                },
            )
            entry["dependent_outputs"].append(output_id)

    if not good:
        details = "\n".join(
            f"{r['message']}: {r['details']}" for _, reasons in failures for r in reasons
        )
        return ValidationResult(
            False,
            error("prompt_outputs_failed_validation", "Prompt outputs failed validation", details),
            [],
            node_errors,
        )
    return ValidationResult(True, None, good, node_errors)
