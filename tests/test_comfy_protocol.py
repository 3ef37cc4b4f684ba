"""services/comfy against the bodies a real ComfyUI 0.3.64 recorded (no server involved)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from services.comfy import catalog as cat
from services.comfy import shapes
from services.comfy.validation import MalformedPrompt, validate_prompt
from tests.traces import load_trace, object_info

UPLOADED = {"trace_upload_9dfb42.png", "sub1/trace_upload_9dfb42.png"}


def _prompt_posts(trace: str) -> list[dict[str, Any]]:
    return [
        e
        for e in load_trace(trace)["events"]
        if e["kind"] == "http"
        and e["request"]["method"] == "POST"
        and e["request"]["path"] == "/prompt"
        and isinstance(e["request"].get("json"), dict)
        and "prompt" in e["request"]["json"]
    ]


def _without_tracebacks(value: Any) -> Any:
    """Tracebacks name the validator's own source lines: everything else must be equal."""
    if isinstance(value, dict):
        return {
            k: "<traceback>" if k == "traceback" else _without_tracebacks(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_without_tracebacks(v) for v in value]
    return value


CASES = [
    (t, e["seq"])
    for t in (
        "04a_validation_errors_400",
        "04b_validation_partial_200",
        "02_success_emptyimage_save",
        "05_execution_error_runtime",
        "07_upload_image_then_loadimage",
        "10_sd15_txt2img_random_ckpt",
    )
    for e in _prompt_posts(t)
]


@pytest.mark.parametrize(("trace", "seq"), CASES, ids=[f"{t[:3]}-{s}" for t, s in CASES])
def test_validation_matches_recorded_response(trace: str, seq: int) -> None:
    event = next(e for e in _prompt_posts(trace) if e["seq"] == seq)
    body, recorded = event["request"]["json"], event["response"]
    catalog = object_info(with_checkpoint=trace.startswith("10"))
    prompt = copy.deepcopy(body["prompt"])
    try:
        result = validate_prompt(
            prompt,
            catalog,
            partial_execution_targets=body.get("partial_execution_targets"),
            file_exists=UPLOADED.__contains__,
        )
    except MalformedPrompt:
        assert recorded["status"] == 500  # ComfyUI's handler raises on these
        return
    if recorded["status"] == 200:
        assert result.ok
        assert result.node_errors == recorded["json"]["node_errors"]
    else:
        assert recorded["status"] == 400 and not result.ok
        assert _without_tracebacks(result.error_body()) == _without_tracebacks(recorded["json"])


def test_validation_converts_values_in_place_and_names_the_outputs_that_run() -> None:
    prompt = copy.deepcopy(
        next(e for e in _prompt_posts("04a_validation_errors_400") if e["seq"] == 63)["request"][
            "json"
        ]["prompt"]
    )
    assert prompt["1"]["inputs"]["width"] == 64.7
    result = validate_prompt(prompt, object_info())
    assert result.ok and result.outputs == ["4"]
    assert prompt["1"]["inputs"]["width"] == 64  # int(), as ComfyUI queues it

    partial = next(e for e in _prompt_posts("04b_validation_partial_200") if e["seq"] == 3)[
        "request"
    ]["json"]
    result = validate_prompt(copy.deepcopy(partial["prompt"]), object_info())
    assert result.ok and result.outputs == ["5"] and set(result.node_errors) == {"2"}


def test_validation_of_uploads_asks_the_callers_file_list() -> None:
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "mine.png"}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    assert validate_prompt(
        copy.deepcopy(prompt), object_info(), file_exists={"mine.png"}.__contains__
    ).ok
    refused = validate_prompt(copy.deepcopy(prompt), object_info(), file_exists=lambda name: False)
    assert (
        refused.node_errors["1"]["errors"][0]["details"] == "image - Invalid image file: mine.png"
    )


def test_value_not_in_list_hides_long_lists_and_checkpoints_come_from_the_catalogue() -> None:
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "nope.safetensors"}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
    }
    many = cat.with_models(object_info(), {"checkpoints": [f"m{i}.safetensors" for i in range(25)]})
    error = validate_prompt(copy.deepcopy(prompt), many).node_errors["1"]["errors"][0]
    assert error["details"] == "ckpt_name: 'nope.safetensors' not in (list of length 25)"
    assert error["extra_info"]["input_config"] is None
    prompt["1"]["inputs"]["ckpt_name"] = "m3.safetensors"
    assert validate_prompt(copy.deepcopy(prompt), many).ok


def test_malformed_prompts_raise() -> None:
    for prompt in ([1, 2], {"1": 5}, "text"):
        with pytest.raises(MalformedPrompt):
            validate_prompt(prompt, object_info())


def test_upload_inputs_and_per_participant_file_lists() -> None:
    found = {(i.class_type, i.input_name, i.kind) for i in cat.upload_inputs(object_info())}
    assert {
        ("LoadImage", "image", "image_upload"),
        ("LoadImageMask", "image", "image_upload"),
        ("LoadVideo", "file", "video_upload"),
        ("Load3D", "model_file", "file_upload"),
    } <= found
    mine = cat.with_file_lists(
        object_info(),
        lambda item: (
            cat.files_for_upload_flag(item.kind, ["a.png", "b.mp4", "c.txt"])
            if not item.kind.startswith("model:")
            else None
        ),
    )
    assert mine["LoadImage"]["input"]["required"]["image"] == [["a.png"], {"image_upload": True}]
    assert mine["LoadVideo"]["input"]["required"]["file"][1]["options"] == ["b.mp4"]
    assert object_info()["LoadImage"]["input"]["required"]["image"][0] == ["example.png"]  # a copy


def test_with_models_gives_the_recorded_catalogue() -> None:
    with_ckpt = cat.with_models(object_info(), {"checkpoints": ["random-sd15.safetensors"]})
    recorded = object_info(with_checkpoint=True)
    for class_type in ("CheckpointLoaderSimple", "CheckpointLoader", "unCLIPCheckpointLoader"):
        assert with_ckpt[class_type] == recorded[class_type]


def test_shapes_rebuild_the_recorded_history_and_queue_entries() -> None:
    trace = load_trace("02_success_emptyimage_save")
    recorded = next(e for e in trace["events"] if e["seq"] == 27)["response"]["json"]
    ((prompt_id, entry),) = recorded.items()
    number, _, prompt, extra_data, outputs = entry["prompt"]
    rebuilt = shapes.history_entry(
        shapes.queue_entry(
            number, prompt_id, prompt, {**extra_data, "auth_token_comfy_org": "x"}, outputs
        ),
        entry["outputs"],
        shapes.history_status(True, [tuple(m) for m in entry["status"]["messages"]]),
        {n: shapes.node_meta(n) for n in entry["meta"]},
    )
    assert rebuilt == entry
    post = next(e for e in trace["events"] if e["seq"] == 2)["response"]["json"]
    assert shapes.prompt_response(post["prompt_id"], post["number"]) == post
    first = next(e for e in trace["events"] if e["kind"] == "ws_recv")["json"]
    assert shapes.status_message(0, first["data"]["sid"]) == first
    executed = next(e for e in trace["events"] if e["seq"] == 22)["json"]
    data = executed["data"]
    assert (
        shapes.message("executed", shapes.executed(data["node"], data["output"], data["prompt_id"]))
        == executed
    )
    closing = next(e for e in trace["events"] if e["seq"] == 26)["json"]
    assert (
        shapes.message("executing", shapes.executing(None, closing["data"]["prompt_id"])) == closing
    )
