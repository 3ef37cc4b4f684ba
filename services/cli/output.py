"""How answers are shown: plain-text tables for people, the raw JSON for scripts, and a
progress line on stderr (only when it is a terminal, so pipes and files stay clean)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any, TextIO


def print_json(value: Any, out: TextIO | None = None) -> None:
    print(json.dumps(value, indent=2, sort_keys=True), file=out or sys.stdout)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], out: TextIO | None = None,
          empty: str = "(none)") -> None:
    """Columns padded to their widest cell; numbers stay left-aligned like the rest (the
    columns are short, and copy-paste into a terminal keeps them)."""
    out = out or sys.stdout
    text = [[cell(v) for v in row] for row in rows]
    if not text:
        print(empty, file=out)
        return
    widths = [max(len(h), *(len(r[i]) for r in text)) for i, h in enumerate(headers)]
    print("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(),
          file=out)
    for row in text:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip(),
              file=out)


def pairs(items: Iterable[tuple[str, Any]], out: TextIO | None = None) -> None:
    """`name  value` lines, names aligned."""
    items = list(items)
    width = max((len(k) for k, _ in items), default=0)
    for key, value in items:
        print(f"{key.ljust(width)}  {cell(value)}", file=out or sys.stdout)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {s:02d} s"
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m:02d} min"


def ago(ts: float | None, now: float | None = None) -> str:
    """How long ago an epoch time (seconds or milliseconds) was."""
    if not ts:
        return "-"
    if ts > 1e11:  # milliseconds
        ts /= 1000
    return duration(max(0.0, (now or time.time()) - ts)) + " ago"


class Progress:
    """`label  n/N  item` rewritten in place on a terminal's stderr; silent elsewhere, except
    for the closing line, so a log still says what was done."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None) -> None:
        self.label, self.total, self.done = label, total, 0
        self.stream = stream or sys.stderr
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())

    def step(self, item: str) -> None:
        self.done += 1
        if self.live:
            bar = "#" * (20 * self.done // max(self.total, 1))
            self.stream.write(
                f"\r{self.label} [{bar:<20}] {self.done}/{self.total} {item}\x1b[K"
            )
            self.stream.flush()

    def close(self) -> None:
        if self.live:
            self.stream.write("\r\x1b[K")
        self.stream.write(f"{self.label}: {self.done}/{self.total} done\n")
        self.stream.flush()
