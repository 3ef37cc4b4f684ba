"""The recorded ComfyUI 0.3.64 traces in `../shared/comfyui/`: found and loaded in one place.

CI clones the repository with `shared/` beside it, so the traces live at
`<repo root>/../shared/comfyui`. Every test (and the test double's default catalogue) that
needs them goes through this module.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_comfyui_dir() -> Path:
    """`<repo root>/../shared/comfyui`, or a clear error saying how to provide it."""
    path = (REPO_ROOT / ".." / "shared" / "comfyui").resolve()
    if not (path / "INDEX.txt").is_file():
        raise FileNotFoundError(
            f"the ComfyUI traces are missing: expected {path}/INDEX.txt. The repository's parent "
            "folder must hold shared/comfyui (in a worktree under /work/wt run "
            "`ln -sfn /work/shared /work/wt/shared`)."
        )
    return path


@functools.cache
def _load_json(name: str) -> Any:
    return json.loads((shared_comfyui_dir() / name).read_text())


def trace_names() -> list[str]:
    """The trace names (`01_connect_handshake`, ...), in recording order."""
    return sorted(p.stem for p in shared_comfyui_dir().glob("[0-9][0-9]*_*.json"))


def load_trace(name: str) -> dict[str, Any]:
    """One trace: `{name, description, client_id, comfyui, notes, events}` (shared: copy it
    before changing it)."""
    return _load_json(f"{name}.json")


def object_info(with_checkpoint: bool = False) -> dict[str, Any]:
    """The recorded `/object_info` catalogue (shared: copy it before changing it)."""
    return _load_json(
        "object_info_with_random_ckpt.json" if with_checkpoint else "object_info.json"
    )


def object_info_path(with_checkpoint: bool = False) -> Path:
    name = "object_info_with_random_ckpt.json" if with_checkpoint else "object_info.json"
    return shared_comfyui_dir() / name


def blob(relative: str) -> bytes:
    """A recorded binary body or frame (`blobs/...` as a trace names it)."""
    return (shared_comfyui_dir() / relative).read_bytes()
