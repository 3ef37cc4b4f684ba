"""models.yaml: which model files the workshop needs, in which ComfyUI folder, from where.

The manifest is the one list the models command, the fetch, the bootstrap's
extra_model_paths.yaml and the worker's placement check all read.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from services.contracts import safe_relpath
from services.fleet.placement import COMFYUI_FOLDERS, MODEL_EXTENSIONS, canonical_folder

#: The repository's manifest (the worker image copies it to the same relative place).
DEFAULT_MANIFEST = Path(__file__).resolve().parents[2] / "models.yaml"


class ManifestError(ValueError):
    """models.yaml is unreadable or an entry is invalid; the message names the entry."""


class Model(BaseModel):
    """One file ComfyUI loads: `<folder>/<file>` under a models root."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = ""
    file: str
    folder: str
    # https, or plain http from a mirror on this machine (loopback).
    url: str = Field(pattern=r"^(https://|http://(127\.0\.0\.1|localhost)[:/])")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(gt=0)
    licence: str = Field(min_length=1)
    gated: bool = False

    @field_validator("file")
    @classmethod
    def _file(cls, value: str) -> str:
        safe_relpath(value, "model file")
        if PurePosixPath(value).suffix not in MODEL_EXTENSIONS:
            raise ValueError(
                f"{value!r}: ComfyUI lists only {', '.join(sorted(MODEL_EXTENSIONS))} files"
            )
        return value

    @field_validator("folder")
    @classmethod
    def _folder(cls, value: str) -> str:
        folder = canonical_folder(value)
        if folder not in COMFYUI_FOLDERS:
            raise ValueError(
                f"{value!r} is not a ComfyUI model folder ({', '.join(sorted(COMFYUI_FOLDERS))})"
            )
        return folder

    @property
    def key(self) -> str:
        """Its object key in the models bucket and its path under a models root."""
        return f"{self.folder}/{self.file}"

    @property
    def label(self) -> str:
        return self.name or self.file


class Manifest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    models: tuple[Model, ...]

    @property
    def folders(self) -> tuple[str, ...]:
        """The ComfyUI folders the manifest uses, in first-use order."""
        return tuple(dict.fromkeys(m.folder for m in self.models))

    @property
    def total_bytes(self) -> int:
        return sum(m.size for m in self.models)


def parse_manifest(text: str, source: str = "models.yaml") -> Manifest:
    """Validate a manifest document; duplicate `<folder>/<file>` entries are an error."""
    try:
        data = yaml.safe_load(text)
        manifest = Manifest.model_validate(data)
    except yaml.YAMLError as exc:
        raise ManifestError(f"{source} is not YAML: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ManifestError(f"{source}: {where}: {first['msg']}") from None
    seen: set[str] = set()
    for model in manifest.models:
        if model.key in seen:
            raise ManifestError(f"{source}: {model.key} is listed twice")
        seen.add(model.key)
    return manifest


def load_manifest(path: Path | str = DEFAULT_MANIFEST) -> Manifest:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ManifestError(f"cannot read the model manifest {path}: {exc.strerror}") from None
    return parse_manifest(text, str(path))


def extra_model_paths(manifest: Manifest, base_path: str) -> str:
    """ComfyUI's extra_model_paths.yaml pointing each manifest folder at `<base>/<folder>`."""
    section: dict[str, object] = {"base_path": base_path}
    section.update({folder: folder for folder in manifest.folders})
    return yaml.safe_dump({"workshop": section}, sort_keys=False)
