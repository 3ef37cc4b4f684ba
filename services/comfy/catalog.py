"""An `/object_info` catalogue: what a node class takes, returns, and which inputs name files.

A catalogue is ComfyUI's `GET /object_info` JSON: `{class_type: {"input": {"required": {...},
"optional": {...}, "hidden": {...}}, "output": [...], "output_node": bool, ...}}`. Each input
spec is `[type]` or `[type, options]`, where `type` is a string (`"INT"`, `"IMAGE"`, `"*"`,
`"COMBO"` for new-style combos whose values sit in `options["options"]`) or a list of the
allowed values (old-style combo).

File-reference inputs: an upload widget is flagged in the options (`image_upload`,
`video_upload`, `audio_upload`, `animated_image_upload`, `file_upload`); model inputs are combos
whose values are the files of a model folder (`ckpt_name` lists `checkpoints`). The gateway
shows each participant their own uploads by replacing those lists (`with_file_lists`); the test
double adds its model files the same way.
"""

from __future__ import annotations

import copy
import mimetypes
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Catalog = dict[str, dict[str, Any]]

#: Option flags that make a combo input an upload widget, and the content types its list holds
#: (the `filter_files_content_types` kinds ComfyUI lists for that widget).
UPLOAD_FLAGS: dict[str, tuple[str, ...]] = {
    "image_upload": ("image",),
    "animated_image_upload": ("image",),
    "video_upload": ("video",),
    "audio_upload": ("audio", "video"),
    "file_upload": ("model",),
}

#: ComfyUI's model folders, in `GET /models` order (folder_paths' registration order).
MODEL_FOLDERS: tuple[str, ...] = (
    "checkpoints", "configs", "loras", "vae", "text_encoders", "diffusion_models", "clip_vision",
    "style_models", "embeddings", "diffusers", "vae_approx", "controlnet", "gligen",
    "upscale_models", "custom_nodes", "hypernetworks", "photomaker", "classifiers",
    "model_patches", "audio_encoders",
)  # fmt: skip

#: Combo inputs of the core loader nodes, by input name, and the model folder they list.
MODEL_INPUT_FOLDERS: dict[str, str] = {
    "ckpt_name": "checkpoints",
    "config_name": "configs",
    "lora_name": "loras",
    "vae_name": "vae",
    "clip_name": "text_encoders",
    "clip_name1": "text_encoders",
    "clip_name2": "text_encoders",
    "clip_name3": "text_encoders",
    "clip_name4": "text_encoders",
    "unet_name": "diffusion_models",
    "control_net_name": "controlnet",
    "style_model_name": "style_models",
    "gligen_name": "gligen",
    "hypernetwork_name": "hypernetworks",
}

#: Node classes whose own validation (ComfyUI's `VALIDATE_INPUTS`) replaces the combo check of
#: one input by "does this annotated file exist" (`folder_paths.exists_annotated_filepath`),
#: with the message ComfyUI returns when it does not.
FILE_CHECKED_INPUTS: dict[str, tuple[str, str]] = {
    "LoadImage": ("image", "Invalid image file: {}"),
    "LoadImageMask": ("image", "Invalid image file: {}"),
    "LoadImageOutput": ("image", "Invalid image file: {}"),
    "LoadVideo": ("file", "Invalid video file: {}"),
    "LoadAudio": ("audio", "Invalid audio file: {}"),
    "LoadLatent": ("latent", "Invalid latent file: {}"),
}


@dataclass(frozen=True)
class InputSpec:
    """One input of a node class as `/object_info` declares it."""

    name: str
    category: str  # "required" | "optional" | "hidden"
    type: Any  # a type string, or the list of allowed values of an old-style combo
    options: dict[str, Any]

    @property
    def config(self) -> list[Any]:
        """`[type, options]`: the `input_config` ComfyUI echoes in validation errors."""
        return [self.type, self.options]

    @property
    def combo_values(self) -> list[Any] | None:
        """The allowed values of a combo (old or new style), else None."""
        if isinstance(self.type, list):
            return self.type
        if self.type == "COMBO":
            return list(self.options.get("options", []))
        return None

    @property
    def upload_flag(self) -> str | None:
        return next((flag for flag in UPLOAD_FLAGS if self.options.get(flag)), None)


def input_specs(
    node_info: Mapping[str, Any], categories=("required", "optional")
) -> list[InputSpec]:
    """The declared inputs of a node class, required first, in declaration order."""
    specs = []
    for category in categories:
        for name, spec in (node_info.get("input", {}).get(category) or {}).items():
            if isinstance(spec, str):  # hidden inputs are written "PROMPT" or ["PROMPT"]
                spec = [spec]
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            specs.append(InputSpec(name, category, spec[0], options))
    return specs


def input_spec(node_info: Mapping[str, Any], name: str) -> InputSpec | None:
    """The spec of input `name` (required, optional or hidden), or None if not declared."""
    for spec in input_specs(node_info, ("required", "optional", "hidden")):
        if spec.name == name:
            return spec
    return None


def hidden_kinds(node_info: Mapping[str, Any]) -> dict[str, str]:
    """Hidden inputs as `{name: kind}` (`PROMPT`, `EXTRA_PNGINFO`, `UNIQUE_ID`, ...)."""
    return {s.name: s.type for s in input_specs(node_info, ("hidden",))}


def is_output_node(node_info: Mapping[str, Any]) -> bool:
    return node_info.get("output_node") is True


def return_types(node_info: Mapping[str, Any]) -> tuple[Any, ...]:
    """The node's output types (a tuple, as ComfyUI's RETURN_TYPES: a bad index says so)."""
    return tuple(node_info.get("output", []))


@dataclass(frozen=True)
class FileInput:
    """An input whose values are file names: an upload widget or a model folder's list."""

    class_type: str
    input_name: str
    kind: str  # an UPLOAD_FLAGS key, or "model:<folder>"


def file_inputs(catalog: Catalog) -> list[FileInput]:
    """Every input of the catalogue whose values are files (uploads or models)."""
    found = []
    for class_type, info in catalog.items():
        for spec in input_specs(info):
            if spec.upload_flag:
                found.append(FileInput(class_type, spec.name, spec.upload_flag))
            elif isinstance(spec.type, list) and spec.name in MODEL_INPUT_FOLDERS:
                found.append(
                    FileInput(class_type, spec.name, "model:" + MODEL_INPUT_FOLDERS[spec.name])
                )
    return found


def upload_inputs(catalog: Catalog) -> list[FileInput]:
    """The inputs that reference a participant's uploaded files (image, video, audio, 3D)."""
    return [f for f in file_inputs(catalog) if not f.kind.startswith("model:")]


def content_type(filename: str) -> str | None:
    """ComfyUI's content kind of a file name: "image", "video", "audio", "model" or None."""
    extension = filename.rsplit(".", 1)[-1].lower()
    if extension == "webp":
        return "image"
    if extension in ("fbx", "glb", "gltf", "obj", "stl"):
        return "model"
    mime, _ = mimetypes.guess_type(filename, strict=False)
    return mime.split("/")[0] if mime else None


def files_for_upload_flag(flag: str, names: Iterable[str]) -> list[str]:
    """The names an upload widget with `flag` lists: the matching content kinds, sorted."""
    kinds = UPLOAD_FLAGS[flag]
    return sorted(n for n in names if content_type(n) in kinds)


def with_file_lists(
    catalog: Catalog, files_for: Callable[[FileInput], list[str] | None]
) -> Catalog:
    """A copy of `catalog` whose file inputs list `files_for(input)` (None: left as it is).

    Old-style combos get the list as their type; new-style (`"COMBO"`) ones as
    `options["options"]`. The gateway passes a participant's own uploads; the double its own
    input folder and model files.
    """
    result = copy.deepcopy(catalog)
    for item in file_inputs(catalog):
        files = files_for(item)
        if files is None:
            continue
        info = result[item.class_type]["input"]
        for category in ("required", "optional"):
            spec = info.get(category, {}).get(item.input_name)
            if spec is None:
                continue
            if isinstance(spec[0], list):
                info[category][item.input_name] = [list(files), *spec[1:]]
            elif len(spec) > 1 and isinstance(spec[1], dict):
                spec[1]["options"] = list(files)
    return result


def with_models(catalog: Catalog, models: Mapping[str, Iterable[str]]) -> Catalog:
    """A copy of `catalog` whose model inputs also list `models` (`{folder: [file names]}`)."""

    def files_for(item: FileInput) -> list[str] | None:
        if not item.kind.startswith("model:"):
            return None
        folder = item.kind.removeprefix("model:")
        spec = input_spec(catalog[item.class_type], item.input_name)
        current = (spec.combo_values or []) if spec else []
        return sorted(set(current) | set(models.get(folder, ())))

    return with_file_lists(catalog, files_for)


def merge_catalogs(catalogs: Iterable[Catalog]) -> Catalog:
    """One catalogue for a pool of ComfyUIs: every node class any of them has, and each combo
    listing the values any of them offers (a model one worker has is listed: the queue sends the
    job to a worker that has it). Classes and values keep the first catalogue's order; values
    only others have follow, and file lists (uploads, models) stay sorted as ComfyUI sorts
    them."""
    merged: Catalog = {}
    for catalog in catalogs:
        for class_type, info in catalog.items():
            if class_type not in merged:
                merged[class_type] = copy.deepcopy(info)
                continue
            inputs = merged[class_type].setdefault("input", {})
            for category in ("required", "optional"):
                specs = info.get("input", {}).get(category) or {}
                if not specs:
                    continue
                own = inputs[category] = inputs.get(category) or {}
                for name, spec in specs.items():
                    if name not in own:
                        own[name] = copy.deepcopy(spec)
                    else:
                        _merge_combo(own[name], spec, name in MODEL_INPUT_FOLDERS)
    return merged


def _merge_combo(own: list[Any], other: list[Any], sort: bool) -> None:
    """Add `other`'s combo values to `own` (an input spec), in place."""
    if isinstance(own[0], list) and isinstance(other[0], list):
        own[0] = _union(own[0], other[0], sort or _is_file_list(own))
    elif (
        own[0] == "COMBO" == other[0]
        and len(own) > 1
        and len(other) > 1
        and isinstance(own[1], dict)
        and isinstance(other[1], dict)
    ):
        own[1]["options"] = _union(
            own[1].get("options", []), other[1].get("options", []), sort or _is_file_list(own)
        )


def _is_file_list(spec: list[Any]) -> bool:
    return len(spec) > 1 and isinstance(spec[1], dict) and any(spec[1].get(f) for f in UPLOAD_FLAGS)


def _union(first: list[Any], second: list[Any], sort: bool) -> list[Any]:
    seen = set(map(_hashable, first))
    values = list(first) + [v for v in second if _hashable(v) not in seen]
    return sorted(values, key=str) if sort else values


def _hashable(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
