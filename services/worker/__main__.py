"""`python -m services.worker`: one worker for one ComfyUI, configured by WORKER_* variables
(services/worker/settings.py). Exits 0 after a clean shutdown (SIGTERM, idle exit), 2 when the
settings are not valid (the message says what to set)."""

from __future__ import annotations

import asyncio
import sys

from services.queue.logging import configure_logging
from services.worker.settings import SettingsError, load_settings
from services.worker.worker import Worker


def main() -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    configure_logging(settings.log_level.upper())
    return asyncio.run(Worker(settings).run())


if __name__ == "__main__":
    sys.exit(main())
