"""Files between object storage and ComfyUI: a participant's uploads into ComfyUI's input
folder before a job, its outputs into storage as the job makes them.

Inputs: the upload widgets of the catalogue (`services.comfy.catalog.upload_inputs`) name files
as ComfyUI does (`photo.png`, `sub/photo.png`, `x.png [output]`); each is read from the owner's
storage (`services.contracts.view_key`) and uploaded under `workshop/<user>/<content hash>/`,
and the graph is rewritten to point there. Two participants' `photo.png` never meet, and a job
queued behind another (prefetch) never swaps the file under the running one: a changed file
has another hash, hence another path.

Outputs: every file entry (`{"filename", "subfolder", "type"}` of type output or temp) in an
`executed` message or the history's outputs is fetched through `/view` and stored at
`job_file_key(user, job id, type, subfolder, filename)`; the participant sees it as
`{"filename", "subfolder": participant_subfolder(job id, subfolder), "type", "key"}` (team
brief 5.0). A cached rerun names the first run's files: they are fetched again (ComfyUI keeps
them) or, if ComfyUI no longer has them, copied from where they were stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import mimetypes
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.comfy.validation import validate_prompt
from services.contracts import (
    FileType,
    job_file_key,
    participant_subfolder,
    safe_relpath,
    view_key,
)
from services.storage import ObjectNotFound, ObjectStore
from services.worker.catalog import NodeCatalog
from services.worker.comfy import ComfyClient

#: ComfyUI input subfolder for participants' files (ComfyUI lists only top-level input files
#: in its loaders, so these never show up in the node catalogue).
UPLOAD_ROOT = "workshop"

_ANNOTATIONS = {"[input]": FileType.INPUT, "[output]": FileType.OUTPUT, "[temp]": FileType.TEMP}


class MissingInput(Exception):
    """A file the graph names is not in its owner's storage: ComfyUI's validation error."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body["error"]["message"])
        self.body = body


def split_annotation(value: str) -> tuple[str, FileType, bool]:
    """`"sub/x.png [output]"` -> ("sub/x.png", OUTPUT, True); no annotation means input."""
    for suffix, file_type in _ANNOTATIONS.items():
        if value.endswith(" " + suffix):
            return value[: -len(suffix) - 1], file_type, True
    return value, FileType.INPUT, False


def upload_references(
    prompt: dict[str, Any], catalog: NodeCatalog
) -> list[tuple[str, str, str]]:
    """(node id, input name, value) of every upload widget in the graph holding a file name."""
    by_class = catalog.uploads
    found = []
    for node_id, node in prompt.items():
        if not isinstance(node, dict):
            continue
        inputs = node.get("inputs") or {}
        for name in by_class.get(node.get("class_type", ""), ()):
            value = inputs.get(name)
            if isinstance(value, str) and value:
                found.append((node_id, name, value))
    return found


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def stage_inputs(
    prompt: dict[str, Any],
    user: str,
    catalog: NodeCatalog,
    store: ObjectStore,
    comfy: ComfyClient,
) -> dict[str, Any]:
    """The graph with its upload references moved to this worker's ComfyUI. Raises
    MissingInput (ComfyUI's validation error, in the participant's own names)."""
    references = upload_references(prompt, catalog)
    if not references:
        return prompt
    staged = copy.deepcopy(prompt)
    missing: dict[str, tuple[str, str, str]] = {}
    for node_id, name, value in references:
        path, file_type, annotated = split_annotation(value)
        subfolder, _, filename = path.rpartition("/")
        try:
            data = await store.get(view_key(user, file_type, subfolder, filename))
        except (ObjectNotFound, ValueError):
            missing[value] = (node_id, name, filename)
            continue
        target = f"{UPLOAD_ROOT}/{user}/{(await asyncio.to_thread(_sha256, data))[:16]}"
        await comfy.upload(data, filename, target)
        staged[node_id]["inputs"][name] = f"{target}/{filename}" + (" [input]" if annotated else "")
    if missing:
        result = validate_prompt(
            copy.deepcopy(prompt), catalog.nodes, file_exists=lambda n: n not in missing
        )
        if not result.ok:
            raise MissingInput(result.error_body())
        # Some outputs do not need the missing files: ComfyUI runs those (and reports the
        # others in node_errors), as it would for a participant's own missing file.
        for node_id, name, filename in missing.values():
            staged[node_id]["inputs"][name] = f"{UPLOAD_ROOT}/{user}/missing/{filename}"
    return staged


def file_entries(output: Any) -> Iterator[dict[str, Any]]:
    """The file entries of one node's UI output (`images`, `gifs`, `audio`, `latents`, ...)."""
    if not isinstance(output, dict):
        return
    for values in output.values():
        if isinstance(values, list):
            for entry in values:
                if _is_file(entry):
                    yield entry


def _is_file(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("filename"), str)
        and entry.get("type") in (FileType.OUTPUT, FileType.TEMP)
    )


def _ref(entry: dict[str, Any]) -> tuple[str, str, str]:
    return entry["type"], entry.get("subfolder") or "", entry["filename"]


@dataclass
class OutputStore:
    """Stores one job's files as ComfyUI names them, each once; remembers where every file
    ComfyUI wrote went (`known`, shared by the worker's jobs) for cached reruns."""

    user: str
    job_id: str
    store: ObjectStore
    comfy: ComfyClient
    known: dict[tuple[str, str, str], str]
    stored: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)

    async def store_output(self, output: Any) -> Any:
        """Store every file of a node's UI output; return it as the participant sees it."""
        for entry in file_entries(output):
            ref = _ref(entry)
            if ref not in self.stored:
                self.stored[ref] = await self._store(ref)
        return self.rewrite(output)

    def rewrite(self, output: Any) -> Any:
        if not isinstance(output, dict):
            return output
        return {
            key: [self.stored.get(_ref(v), v) if _is_file(v) else v for v in values]
            if isinstance(values, list)
            else values
            for key, values in output.items()
        }

    async def _store(self, ref: tuple[str, str, str]) -> dict[str, Any]:
        file_type, subfolder, filename = ref
        safe_relpath(subfolder, "subfolder")
        key = job_file_key(self.user, self.job_id, FileType(file_type), subfolder, filename)
        content_type = mimetypes.guess_type(filename)[0]
        with tempfile.TemporaryDirectory(prefix="comfy-out-") as tmp:
            local = Path(tmp) / "file"
            if await self.comfy.download(filename, subfolder, file_type, local):
                await self.store.put_file(key, local, content_type)
            elif ref in self.known:  # a cached rerun of a file ComfyUI no longer has
                await self.store.copy(self.known[ref], key)
            else:
                raise FileNotFoundError(f"ComfyUI has no {file_type} file {subfolder}/{filename}")
        with contextlib.suppress(KeyError):
            del self.known[ref]
        self.known[ref] = key  # newest last: the map is bounded by its oldest entries
        while len(self.known) > _KNOWN_FILES:
            del self.known[next(iter(self.known))]
        return {
            "filename": filename,
            "subfolder": participant_subfolder(self.job_id, subfolder),
            "type": file_type,
            "key": key,
        }


#: How many stored files a worker remembers for cached reruns.
_KNOWN_FILES = 10_000
