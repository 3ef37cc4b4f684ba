"""ComfyUI's file routes over object storage, under this participant's prefix only:
`/view` (outputs and temp files of their jobs, their uploads), `/upload/image` and
`/upload/mask` (stored where workers read inputs), `/internal/files/{type}`.

Every key comes from `services.contracts` (`view_key`, `input_key`, `job_file_key`), which
refuse traversal; the checks before them answer as ComfyUI does (400 for a bad file name or
type, 403 for a subfolder that climbs out, 404 for anything not there). Image work (previews,
channels, masks, upload checks) runs in a thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import mimetypes
import posixpath
from typing import Any

import orjson
from PIL import Image, PngImagePlugin
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from services.comfy.catalog import content_type as content_kind
from services.contracts import FileType, input_key, job_file_key, safe_relpath, view_key
from services.gateway import responses
from services.gateway.context import Gateway, Space
from services.storage import ObjectInfo, ObjectNotFound

#: Uploads of type temp/output are not a job's files: they live under this pseudo job id,
#: which no job can have (job ids start with a letter or digit).
UPLOAD_FOLDER = "_uploads"
#: Kinds of file /upload/image takes (the frontend uploads videos and audio there too).
UPLOAD_KINDS = ("image", "video", "audio", "model")
_FORCE_DOWNLOAD = {"text/html", "text/html-sandboxed", "application/xhtml+xml",
                   "text/javascript", "text/css"}  # fmt: skip


def _annotated(name: str) -> tuple[str, str | None]:
    """ComfyUI's `annotated_filepath`: `name [output]` names a type."""
    for kind in ("output", "input", "temp"):
        suffix = f" [{kind}]"
        if name.endswith(suffix):
            return name[: -len(suffix)], kind
    return name, None


def _climbs_out(subfolder: str) -> bool:
    """Whether `subfolder` leaves its type's folder (ComfyUI answers 403)."""
    return posixpath.normpath(posixpath.join("/base", subfolder)).startswith(
        "/base/"
    ) is False and (posixpath.normpath(posixpath.join("/base", subfolder)) != "/base")


def stored_key(space: Space, file_type: FileType, subfolder: str, filename: str) -> str:
    """The object a participant's (type, subfolder, filename) names; ValueError if none can.
    Uploads of type temp/output keep their own pseudo job folder."""
    if file_type is not FileType.INPUT and (
        subfolder == UPLOAD_FOLDER or subfolder.startswith(UPLOAD_FOLDER + "/")
    ):
        rest = subfolder[len(UPLOAD_FOLDER) + 1 :]
        return job_file_key(space.name, UPLOAD_FOLDER, file_type, rest, filename)
    return view_key(space.name, file_type, subfolder, filename)


async def by_comfy_name(
    gw: Gateway, space: Space, file_type: FileType, subfolder: str, filename: str
) -> ObjectInfo | None:
    """The participant's newest output (or temp) file that ComfyUI named `subfolder/filename`,
    whichever job wrote it: a client that builds `/view` from ComfyUI's own names (a
    script that knows its `filename_prefix`, a recorded trace, `name [output]`) finds the
    file, as in one ComfyUI's output folder. Histories name each file by its job
    (`<prompt id>/...`), which stays unambiguous when two workers' ComfyUIs reuse a name."""
    try:
        wanted = "/" + view_relpath(subfolder, filename)
    except ValueError:
        return None
    prefix = space.file_type_dir(file_type)
    found = [
        o
        for o in await gw.store.list(prefix)
        if (rest := o.key[len(prefix) :]).find("/") > 0 and rest[rest.find("/") :] == wanted
    ]
    return max(found, key=lambda o: (o.modified, o.key), default=None)


async def _resolved_key(
    gw: Gateway, space: Space, file_type: FileType, subfolder: str, filename: str
) -> str | None:
    """The object a participant's (type, subfolder, filename) names: as histories name it
    (`<prompt id>/...`), else by ComfyUI's own name; None if there is none."""
    try:
        key = stored_key(space, file_type, subfolder, filename)
    except ValueError:
        key = None
    if key is not None and await gw.store.stat(key) is not None:
        return key
    if file_type is FileType.INPUT:
        return None
    found = await by_comfy_name(gw, space, file_type, subfolder, filename)
    return found.key if found is not None else None


def view_relpath(subfolder: str, filename: str) -> str:
    """`subfolder/filename` checked part by part (ValueError for anything that could climb)."""
    return "/".join(
        p for p in (safe_relpath(subfolder, "subfolder"), safe_relpath(filename, "filename")) if p
    )


# -- /view ----------------------------------------------------------------------------------
async def view(request: Request, gw: Gateway, space: Space) -> Response:
    query = request.query_params
    if "filename" not in query:
        return responses.empty(404)
    filename, annotated_type = _annotated(query["filename"])
    if not filename:
        return responses.empty(400)
    if filename[0] == "/" or ".." in filename:
        return responses.empty(400)
    type_name = annotated_type or query.get("type", "output")
    try:
        file_type = FileType(type_name)
    except ValueError:
        return responses.empty(400)
    subfolder = query.get("subfolder", "")
    if _climbs_out(subfolder):
        return responses.empty(403)
    filename = posixpath.basename(filename)
    subfolder = posixpath.normpath(subfolder) if subfolder else ""
    subfolder = "" if subfolder == "." else subfolder
    key = await _resolved_key(gw, space, file_type, subfolder, filename)
    info = await gw.store.stat(key) if key is not None else None
    if key is None or info is None:
        return responses.empty(404)
    disposition = {"Content-Disposition": f'filename="{filename}"'}
    preview, channel = query.get("preview"), query.get("channel")
    if preview is not None or channel in ("rgb", "a"):
        try:
            data = await gw.store.get(key)
        except ObjectNotFound:
            return responses.empty(404)
        try:
            body, media = await asyncio.to_thread(_converted, data, preview, channel or "")
        except (OSError, ValueError, Image.DecompressionBombError):
            return responses.empty(415)
        return Response(body, media_type=media, headers=disposition)
    media = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    if media in _FORCE_DOWNLOAD:
        media = "application/octet-stream"
    headers = {**disposition, "Content-Length": str(info.size), "Cache-Control": "no-cache"}
    return StreamingResponse(gw.store.stream(key), media_type=media, headers=headers)


def _converted(data: bytes, preview: str | None, channel: str) -> tuple[bytes, str]:
    """ComfyUI's /view conversions: `preview=webp|jpeg[;quality]`, `channel=rgb|a`."""
    buffer = io.BytesIO()
    with Image.open(io.BytesIO(data)) as img:
        if preview is not None:
            parts = preview.split(";")
            fmt = parts[0] if parts[0] in ("webp", "jpeg") and "a" not in channel else "webp"
            quality = int(parts[-1]) if parts[-1].isdigit() else 90
            out = img.convert("RGB") if fmt == "jpeg" or channel == "rgb" else img
            out.save(buffer, format=fmt, quality=quality)
            return buffer.getvalue(), f"image/{fmt}"
        if channel == "rgb":
            out = Image.merge("RGB", img.split()[:3]) if img.mode == "RGBA" else img.convert("RGB")
            out.save(buffer, format="PNG")
        else:
            alpha = img.split()[3] if img.mode == "RGBA" else Image.new("L", img.size, 255)
            out = Image.new("RGBA", img.size)
            out.putalpha(alpha)
            out.save(buffer, format="PNG")
        return buffer.getvalue(), "image/png"


# -- uploads --------------------------------------------------------------------------------
def _is_image(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
        return True
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return False


async def _upload_target(space: Space, file_type: FileType, subfolder: str, name: str) -> str:
    if file_type is FileType.INPUT:
        return input_key(space.name, subfolder, name)
    return job_file_key(space.name, UPLOAD_FOLDER, file_type, subfolder, name)


async def _store_upload(gw: Gateway, space: Space, form: Any, data_for: Any = None) -> Response:
    """ComfyUI's `image_upload`: the `image` file into `type` (input, temp, output) /
    `subfolder`; unless `overwrite`, an existing name gets ` (1)`, ` (2)`... appended, and a
    file identical to the one already there is not stored twice."""
    image = form.get("image")
    if not isinstance(image, UploadFile):
        return responses.empty(400)
    filename = image.filename or ""
    try:
        file_type = FileType(form.get("type") or "input")
    except ValueError:
        return responses.empty(400)
    subfolder = str(form.get("subfolder") or "")
    if not filename or _climbs_out(subfolder) or "/" in filename or "\\" in filename:
        return responses.empty(400)
    if content_kind(filename) not in UPLOAD_KINDS:
        return responses.empty(400)
    data = await image.read()
    if content_kind(filename) == "image" and not await asyncio.to_thread(_is_image, data):
        return responses.empty(400)
    if data_for is not None:
        result = await data_for(data)
        if isinstance(result, Response):
            return result
        data = result
    try:
        key = await _upload_target(space, file_type, subfolder, filename)
    except ValueError:
        return responses.empty(400)
    overwrite = form.get("overwrite") in ("true", "1")
    stem, dot, ext = filename.rpartition(".")
    stem, ext = (stem, dot + ext) if dot else (filename, "")
    i = 1
    duplicate = False
    while not overwrite and await gw.store.stat(key) is not None:
        existing = await gw.store.get(key)
        if hashlib.sha256(existing).digest() == hashlib.sha256(data).digest():
            duplicate = True
            break
        filename = f"{stem} ({i}){ext}"
        key = await _upload_target(space, file_type, subfolder, filename)
        i += 1
    if not duplicate:
        await gw.store.put(key, data, mimetypes.guess_type(filename)[0])
    # ComfyUI's answer: /view finds a temp or output upload by this name (`by_comfy_name`).
    return responses.json({"name": filename, "subfolder": subfolder, "type": file_type.value})


async def upload_image(request: Request, gw: Gateway, space: Space) -> Response:
    form = await request.form(
        max_files=1, max_fields=20, max_part_size=gw.settings.max_upload_bytes
    )
    try:
        return await _store_upload(gw, space, form)
    finally:
        await form.close()


async def upload_mask(request: Request, gw: Gateway, space: Space) -> Response:
    """The mask editor's upload: the uploaded image's alpha applied to `original_ref`'s
    image (kept with its PNG text), stored as a new upload."""
    form = await request.form(
        max_files=1, max_fields=20, max_part_size=gw.settings.max_upload_bytes
    )
    try:
        try:
            ref = orjson.loads(str(form.get("original_ref") or ""))
            original, annotated_type = _annotated(str(ref["filename"]))
        except (ValueError, KeyError, TypeError):
            return responses.empty(400)
        if not original or original[0] == "/" or ".." in original:
            return responses.empty(400)
        ref_subfolder = str(ref.get("subfolder") or "")
        if _climbs_out(ref_subfolder):
            return responses.empty(403)
        try:
            ref_type = FileType(annotated_type or ref.get("type") or "output")
        except ValueError:
            return responses.empty(400)
        original_key = await _resolved_key(gw, space, ref_type, ref_subfolder, original)

        async def with_alpha(mask: bytes) -> bytes | Response:
            if original_key is None:
                return mask  # ComfyUI keeps the upload as it is when the original is gone
            try:
                base = await gw.store.get(original_key)
            except ObjectNotFound:
                return mask  # ComfyUI keeps the upload as it is when the original is gone
            try:
                return await asyncio.to_thread(_apply_mask, base, mask)
            except (OSError, ValueError, Image.DecompressionBombError):
                return responses.empty(400)

        return await _store_upload(gw, space, form, with_alpha)
    finally:
        await form.close()


def _apply_mask(base: bytes, mask: bytes) -> bytes:
    with Image.open(io.BytesIO(base)) as original, Image.open(io.BytesIO(mask)) as layer:
        info = PngImagePlugin.PngInfo()
        for key, value in getattr(original, "text", {}).items():
            info.add_text(key, value)
        rgba = original.convert("RGBA")
        rgba.putalpha(layer.convert("RGBA").getchannel("A"))
        out = io.BytesIO()
        rgba.save(out, format="PNG", compress_level=4, pnginfo=info)
        return out.getvalue()


async def internal_files(request: Request, gw: Gateway, space: Space, kind: str) -> Response:
    """`/internal/files/{output|input|temp}`: this participant's file names, newest first."""
    try:
        file_type = FileType(kind)
    except ValueError:
        return responses.json({"error": "Invalid directory type"}, 400)
    prefix = space.file_type_dir(file_type)
    found = sorted(await gw.store.list(prefix), key=lambda o: -o.modified)
    return responses.json([posixpath.basename(o.key) for o in found])
