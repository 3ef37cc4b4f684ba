"""Small manifests of generated model files, and a real HTTP server that serves them."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import yaml

from services.fleet.manifest import Manifest, parse_manifest


@dataclass
class Blob:
    folder: str
    file: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def make_blob(folder: str, file: str, size: int, seed: int = 0) -> Blob:
    """Deterministic pseudo-random bytes (every byte position matters for the hash)."""
    out = bytearray()
    block = hashlib.sha256(f"{folder}/{file}/{seed}".encode()).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return Blob(folder, file, bytes(out[:size]))


def manifest_for(blobs: list[Blob], base_url: str = "https://example.org/m") -> Manifest:
    return parse_manifest(
        yaml.safe_dump(
            {
                "models": [
                    {
                        "name": b.file,
                        "file": b.file,
                        "folder": b.folder,
                        "url": f"{base_url}/{b.folder}/{b.file}",
                        "sha256": b.sha256,
                        "size": len(b.data),
                        "licence": "CC0-1.0",
                    }
                    for b in blobs
                ]
            }
        )
    )


@dataclass
class FileServer:
    """Serves `files[path] = bytes` over real HTTP; records the paths it was asked for."""

    files: dict[str, bytes] = field(default_factory=dict)
    status: dict[str, int] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, auth)
    url: str = ""


@contextlib.contextmanager
def serve_files(server_state: FileServer) -> Iterator[FileServer]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server_state.requests.append((self.path, self.headers.get("Authorization")))
            code = server_state.status.get(self.path, 200)
            body = server_state.files.get(self.path)
            if body is None or code != 200:
                self.send_response(404 if body is None else code)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for i in range(0, len(body), 65536):
                self.wfile.write(body[i : i + 65536])

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server_state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server_state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def write_model(root: os.PathLike[str], blob: Blob, folder: str | None = None) -> None:
    path = os.path.join(root, folder or blob.folder, blob.file)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(blob.data)
