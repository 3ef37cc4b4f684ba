"""The organizer's dashboard: a static page (HTML, one JS module, CSS; no build step) served
by the queue at /admin/. It holds no data itself: every figure comes from the admin API with
the admin's own credentials, and it stays live over /api/events."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

#: The page's files (package data).
STATIC_DIR = Path(__file__).parent / "static"
#: Where the queue mounts it (services/contracts.py ADMIN_PATHS route here).
MOUNT_PATH = "/admin"


def mount_dashboard(app: FastAPI) -> None:
    """Serve the page; index.html answers /admin/ (and /admin redirects there)."""
    app.mount(MOUNT_PATH, StaticFiles(directory=STATIC_DIR, html=True), name="admin")
