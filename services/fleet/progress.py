"""Byte progress for long copies, printed at most every few seconds (thread-safe)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    raise AssertionError("unreachable")


class Progress:
    """`advance(n)` from any thread; a line like `sd_xl.safetensors 1.2 GB / 6.9 GB 85.0 MB/s`
    goes to `out` when `every_s` has passed, and once more at `done()`."""

    def __init__(
        self,
        label: str,
        total: int,
        out: TextIO | None = None,
        every_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label, self.total, self.every_s, self.clock = label, total, every_s, clock
        self.out = out if out is not None else sys.stderr
        self.done_bytes = 0
        self._lock = threading.Lock()
        self._start = self._last = clock()

    def advance(self, n: int) -> None:
        with self._lock:
            self.done_bytes += n
            now = self.clock()
            if now - self._last >= self.every_s:
                self._last = now
                self._print(now)

    def done(self, note: str = "") -> None:
        with self._lock:
            self._print(self.clock(), note)

    def _print(self, now: float, note: str = "") -> None:
        rate = self.done_bytes / max(now - self._start, 1e-6)
        line = f"{self.label} {human(self.done_bytes)} / {human(self.total)} {human(rate)}/s"
        print(f"{line} {note}".rstrip(), file=self.out, flush=True)
