"""The official ComfyUI frontend (PyPI `comfyui-frontend-package`, pinned to the version the
workers' ComfyUI asks for), served from the installed package, plus our extension.

Hashed assets (`assets/<name>-<hash>.js`) never change under their name: they are served
`Cache-Control: public, max-age=31536000, immutable`, gzip-compressed once into a cache folder
(in a thread, at start), so twenty browsers loading at once cost the VPS a few file reads.
`index.html` and the other unhashed files are `no-cache` (revalidated by ETag), as ComfyUI
serves them.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import importlib.metadata
import importlib.resources
import mimetypes
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import structlog
from starlette.requests import Request
from starlette.responses import FileResponse, Response

log = structlog.get_logger(__name__)

PACKAGE = "comfyui-frontend-package"
EXTENSION_DIR = Path(__file__).parent / "extension"
#: Where our extension is served (listed by /extensions like a custom node's web folder).
EXTENSION_PREFIX = "extensions/workshop/"

_HASHED = re.compile(r"^assets/(?:.+/)?[^/]+-[A-Za-z0-9_-]{8}\.[a-z0-9]+(?:\.map)?$")
_COMPRESSIBLE = (".js", ".css", ".html", ".json", ".svg", ".txt", ".ttf", ".woff", ".mjs")
_MIN_COMPRESS = 1024
IMMUTABLE = "public, max-age=31536000, immutable"

mimetypes.add_type("application/javascript", ".js")
mimetypes.add_type("application/javascript", ".mjs")
mimetypes.add_type("image/webp", ".webp")


def static_root() -> Path:
    import comfyui_frontend_package

    return Path(str(importlib.resources.files(comfyui_frontend_package) / "static"))


def frontend_version() -> str:
    return importlib.metadata.version(PACKAGE)


@dataclass(frozen=True)
class Asset:
    path: Path
    size: int
    etag: str
    content_type: str
    immutable: bool
    compressible: bool


class Frontend:
    """An index of the frontend's files (built once), and their precompressed copies."""

    def __init__(self, cache_dir: Path | None = None) -> None:
        self.root = static_root()
        self.version = frontend_version()
        self.files: dict[str, Asset] = {}
        for base, prefix in ((self.root, ""), (EXTENSION_DIR, EXTENSION_PREFIX)):
            for path in sorted(base.rglob("*")):
                if path.is_file():
                    self._add(prefix + path.relative_to(base).as_posix(), path)
        self.extensions = sorted(
            "/" + name
            for name in self.files
            if name.startswith("extensions/") and name.endswith(".js")
        )
        folder = cache_dir or Path(tempfile.gettempdir()) / "comfy-workshop-frontend"
        self.cache_dir = folder / self.version
        self._gzipped: set[str] = set()

    def _add(self, name: str, path: Path) -> None:
        st = path.stat()
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if content_type.startswith("text/") or content_type == "application/javascript":
            content_type += "; charset=utf-8"
        digest = hashlib.sha256(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()
        self.files[name] = Asset(
            path=path,
            size=st.st_size,
            etag=f'"{digest[:20]}"',
            content_type=content_type,
            immutable=bool(_HASHED.match(name)),
            compressible=name.endswith(_COMPRESSIBLE) and st.st_size >= _MIN_COMPRESS,
        )

    # -- precompression ---------------------------------------------------------------------
    def _gz_path(self, name: str) -> Path:
        """Named by the file's ETag (its name, size and mtime) too: a file changed under the
        same frontend version (our own extension, after a deploy) is compressed anew."""
        return self.cache_dir / f"{name}.{self.files[name].etag.strip(chr(34))}.gz"

    def precompress(self) -> int:
        """gzip every compressible file once (kept across restarts); returns how many were
        written now. Source maps are left alone: only open developer tools load them."""
        written = 0
        for name, asset in self.files.items():
            if not asset.compressible or name.endswith(".map"):
                continue
            target = self._gz_path(name)
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                data = gzip.compress(asset.path.read_bytes(), compresslevel=9, mtime=0)
                fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".gz-")
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                os.replace(tmp, target)
                written += 1
            self._gzipped.add(name)
        return written

    async def precompress_in_background(self) -> None:
        try:
            written = await asyncio.to_thread(self.precompress)
            log.info("frontend assets compressed", written=written, cache=str(self.cache_dir))
        except OSError as exc:  # a read-only or full disk: serve uncompressed
            log.warning("could not precompress the frontend", error=str(exc))

    # -- serving ----------------------------------------------------------------------------
    def response(self, name: str, request: Request) -> Response | None:
        """The file `name` (relative to the frontend root), or None if there is none."""
        asset = self.files.get(name)
        if asset is None:
            return None
        headers = {
            "Cache-Control": IMMUTABLE if asset.immutable else "no-cache",
            "ETag": asset.etag,
            "Vary": "Accept-Encoding",
        }
        if request.headers.get("if-none-match") == asset.etag:
            return Response(status_code=304, headers=headers)
        path = asset.path
        if name in self._gzipped and "gzip" in request.headers.get("accept-encoding", ""):
            path = self._gz_path(name)
            headers["Content-Encoding"] = "gzip"
        return FileResponse(path, headers=headers, media_type=asset.content_type)
