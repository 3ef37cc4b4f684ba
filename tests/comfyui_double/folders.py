"""The double's folders, laid out and addressed like ComfyUI's `folder_paths`.

`<root>/input`, `output`, `temp`, `user/default` and `models/<folder>`: `/view`, uploads and
the save nodes resolve names here exactly as ComfyUI does (`name [output]` annotations, the
`prefix_00001_.png` counter found by scanning the folder, refusal to leave a folder).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

from PIL import Image

from services.comfy.catalog import MODEL_FOLDERS, content_type

_ANNOTATIONS = {"[output]": "output", "[input]": "input", "[temp]": "temp"}


class Folders:
    def __init__(
        self,
        root: Path,
        output: Path | None = None,
        input_: Path | None = None,
        temp: Path | None = None,
    ):
        self.root = Path(root).resolve()
        self.input = Path(input_ or self.root / "input").resolve()
        self.output = Path(output or self.root / "output").resolve()
        self.temp = Path(temp or self.root / "temp").resolve()
        self.user = self.root / "user" / "default"
        self.models_root = self.root / "models"

    def create(self) -> None:
        """Make the folders; like a fresh ComfyUI checkout, input holds example.png."""
        for path in (self.input, self.output, self.temp, self.models_root):
            path.mkdir(parents=True, exist_ok=True)
        example = self.input / "example.png"
        if not example.exists():
            Image.new("RGB", (64, 64), (128, 128, 128)).save(example)

    def clear_temp(self) -> None:
        """ComfyUI empties its temp folder at start."""
        shutil.rmtree(self.temp, ignore_errors=True)
        self.temp.mkdir(parents=True, exist_ok=True)

    def by_type(self, type_name: str | None) -> Path | None:
        """`get_directory_by_type`: output, temp or input; anything else None."""
        return {"output": self.output, "temp": self.temp, "input": self.input}.get(type_name or "")

    def annotated(self, name: str) -> tuple[str, Path | None]:
        """`name [output]` -> (`name`, output folder); an unannotated name -> (name, None)."""
        for suffix, type_name in _ANNOTATIONS.items():
            if name.endswith(suffix):
                return name[: -len(suffix) - 1], self.by_type(type_name)
        return name, None

    def annotated_path(self, name: str) -> Path:
        name, base = self.annotated(name)
        return (base or self.input) / name

    def exists_annotated(self, name: str) -> bool:
        return os.path.exists(self.annotated_path(name))

    def input_files(self) -> list[str]:
        """The files directly in input (what LoadImage & co. list), sorted."""
        return sorted(p.name for p in self.input.iterdir() if p.is_file())

    def input_subfolders(self) -> list[str]:
        return sorted(
            str(p.relative_to(self.input)).replace(os.sep, "/")
            for p in self.input.rglob("*")
            if p.is_dir()
        )

    def save_path(self, prefix: str, base: Path) -> tuple[Path, str, int, str]:
        """`get_save_image_path`: (folder, file name prefix, next counter, subfolder)."""
        normalized = os.path.normpath(prefix)
        subfolder = os.path.dirname(normalized)
        filename = os.path.basename(normalized)
        folder = (base / subfolder).resolve()
        if os.path.commonpath((base, folder)) != str(base):
            raise Exception("**** ERROR: Saving image outside the output folder is not allowed.")
        folder.mkdir(parents=True, exist_ok=True)
        counter = 0
        for existing in os.listdir(folder):
            head = existing[: len(filename) + 1]
            if head[:-1] == filename and head[-1:] == "_":
                try:
                    counter = max(counter, int(existing[len(filename) + 1 :].split("_")[0]))
                except ValueError:
                    continue
        return folder, filename, counter + 1, subfolder

    # -- models ---------------------------------------------------------------------------

    def model_dir(self, folder: str) -> Path:
        return self.models_root / folder

    def add_model(self, folder: str, name: str, metadata: dict[str, str] | None = None) -> Path:
        """Write a tiny safetensors file (header only) so `/view_metadata` can read it."""
        path = self.model_dir(folder) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        header = json.dumps({"__metadata__": metadata or {"format": "pt"}}).encode()
        path.write_bytes(struct.pack("<Q", len(header)) + header)
        return path

    def model_files(self, folder: str) -> list[str]:
        base = self.model_dir(folder)
        if not base.is_dir():
            return []
        return sorted(
            str(p.relative_to(base)).replace(os.sep, "/") for p in base.rglob("*") if p.is_file()
        )

    def models(self) -> dict[str, list[str]]:
        return {folder: self.model_files(folder) for folder in MODEL_FOLDERS}

    def listing(self) -> dict[str, list[str]]:
        """Every file the double holds, by type, as relative posix paths."""
        result = {}
        for type_name in ("output", "temp", "input"):
            base = self.by_type(type_name)
            result[type_name] = sorted(
                str(p.relative_to(base)).replace(os.sep, "/")
                for p in base.rglob("*")
                if p.is_file()
            )
        return result


def is_image_name(name: str) -> bool:
    return content_type(name) == "image"
