"""Is every manifest model where ComfyUI will look for it?

The most common failure with ComfyUI on rented GPUs is a model in the wrong folder: the loader's
list does not offer it and the prompt fails with "value not in list". The worker calls
`check_placement` at start (WORKER_MODELS_MANIFEST) and the bootstrap runs it after the fetch;
a misplaced file is reported with the folder it belongs in.

The folder layout is ComfyUI 0.3.64's (folder_paths.py): each folder name maps to one or more
directories under `<ComfyUI>/models/`, `unet` and `clip` are legacy names for
`diffusion_models` and `text_encoders`, extra_model_paths.yaml adds directories, and only
files with the model extensions are listed (recursively, following links).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from services.fleet.manifest import Manifest

#: Folder name -> its default directories under ComfyUI's models/ (first = where to put files).
COMFYUI_FOLDERS: dict[str, tuple[str, ...]] = {
    "checkpoints": ("checkpoints",),
    "loras": ("loras",),
    "vae": ("vae",),
    "text_encoders": ("text_encoders", "clip"),
    "diffusion_models": ("diffusion_models", "unet"),
    "clip_vision": ("clip_vision",),
    "style_models": ("style_models",),
    "embeddings": ("embeddings",),
    "vae_approx": ("vae_approx",),
    "controlnet": ("controlnet", "t2i_adapter"),
    "gligen": ("gligen",),
    "upscale_models": ("upscale_models",),
    "hypernetworks": ("hypernetworks",),
    "photomaker": ("photomaker",),
    "model_patches": ("model_patches",),
    "audio_encoders": ("audio_encoders",),
}
LEGACY_FOLDERS = {"unet": "diffusion_models", "clip": "text_encoders"}
MODEL_EXTENSIONS = frozenset(
    {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
)


def canonical_folder(name: str) -> str:
    """ComfyUI's current name for a folder (`unet` -> `diffusion_models`)."""
    return LEGACY_FOLDERS.get(name, name)


@dataclass(frozen=True)
class Problem:
    """A manifest model ComfyUI will not find as listed; `message` says what to do."""

    file: str
    folder: str
    kind: str  # "missing" | "wrong_folder" | "wrong_size"
    message: str
    found_at: Path | None = None
    right_folder: str | None = None


def model_roots(
    comfyui_dir: Path | None = None, extra_model_paths: Path | None = None
) -> dict[str, list[Path]]:
    """The directories ComfyUI searches per folder: `<comfyui_dir>/models/...` (if given),
    then each entry of an extra_model_paths.yaml (resolved as ComfyUI resolves them)."""
    roots: dict[str, list[Path]] = {folder: [] for folder in COMFYUI_FOLDERS}
    if comfyui_dir is not None:
        for folder, subdirs in COMFYUI_FOLDERS.items():
            roots[folder] += [comfyui_dir / "models" / d for d in subdirs]
    if extra_model_paths is not None:
        config = yaml.safe_load(extra_model_paths.read_text()) or {}
        here = extra_model_paths.resolve().parent
        for section in config.values():
            if not isinstance(section, dict):
                continue
            section = dict(section)
            section.pop("is_default", None)
            base = section.pop("base_path", None)
            base_dir = None
            if base:
                base_dir = Path(os.path.expandvars(os.path.expanduser(str(base))))
                base_dir = base_dir if base_dir.is_absolute() else here / base_dir
            for folder, value in section.items():
                folder = canonical_folder(str(folder))
                for line in str(value).split("\n"):
                    if not line.strip():
                        continue
                    path = Path(line.strip())
                    path = (
                        (base_dir / path)
                        if base_dir
                        else (path if path.is_absolute() else here / path)
                    )
                    roots.setdefault(folder, []).append(Path(os.path.normpath(path)))
    return roots


def _listed(root: Path, file: str) -> Path | None:
    path = root / file
    return path if path.is_file() else None


def _find_elsewhere(
    file: str, folder: str, roots: Mapping[str, Sequence[Path]]
) -> tuple[str, Path] | None:
    """The first other folder that holds a file of that name (directly or in a subfolder)."""
    name = Path(file).name
    for other, dirs in roots.items():
        if other == folder:
            continue
        for root in dirs:
            direct = _listed(root, file)
            if direct:
                return other, direct
            if root.is_dir():
                for hit in sorted(root.rglob(name)):
                    if hit.is_file():
                        return other, hit
    return None


def check_placement(
    manifest: Manifest | Path | str, model_roots: Mapping[str, Sequence[Path]]
) -> list[Problem]:
    """Every manifest model must be a file of the listed size in one of its folder's roots;
    return one Problem per model that is not (an empty list: all in place)."""
    if not hasattr(manifest, "models"):
        from services.fleet.manifest import load_manifest

        manifest = load_manifest(manifest)  # type: ignore[arg-type]
    problems: list[Problem] = []
    for model in manifest.models:  # type: ignore[union-attr]
        dirs = list(model_roots.get(model.folder, ()))
        where = next((p for p in (_listed(d, model.file) for d in dirs) if p), None)
        target = (dirs[0] / model.file) if dirs else Path(model.folder) / model.file
        if where is not None:
            size = where.stat().st_size
            if size != model.size:
                problems.append(
                    Problem(
                        model.file,
                        model.folder,
                        "wrong_size",
                        f"{model.file} in {model.folder} is {size} bytes, the manifest says "
                        f"{model.size}: a partial or different file; fetch it again "
                        f"(python -m services.fleet fetch)",
                        found_at=where,
                    )
                )
            continue
        elsewhere = _find_elsewhere(model.file, model.folder, model_roots)
        if elsewhere is not None:
            other, path = elsewhere
            problems.append(
                Problem(
                    model.file,
                    model.folder,
                    "wrong_folder",
                    f"{model.file} is in {other} ({path}), but ComfyUI looks for it in "
                    f"{model.folder}: move it to {target}",
                    found_at=path,
                    right_folder=model.folder,
                )
            )
        else:
            searched = ", ".join(str(d) for d in dirs) or "no directory configured"
            problems.append(
                Problem(
                    model.file,
                    model.folder,
                    "missing",
                    f"{model.file} ({model.label}) is missing from {model.folder} "
                    f"(searched {searched}); fetch it to {target}",
                )
            )
    return problems
