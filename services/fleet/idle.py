"""The idle power-off rule: when may a GPU host turn itself off?

A GPU is billed by the hour, and a failed or forgotten `pulumi destroy` must not leave one
running all night. The rule is a pure function of the clock, the workers' status files
(WORKER_STATUS_FILE, docs/architecture.md and the team brief 5.1) and whether the queue answers:

- busy: some worker says `busy` and reached the queue within `stale_s` (a worker that died
  mid-job leaves a `busy` file behind; without fresh queue contact it no longer counts);
- idle: no busy worker for `idle_s` (counted from the latest `last_busy_at`, a stale busy
  worker's last queue contact, or the watchdog's start after a boot);
- queue unreachable: neither the watchdog's own probe nor any worker reached the queue for
  `idle_s`: that counts as idle even while a worker claims to be busy, because its results can
  no longer be delivered and nobody can give it new work.

`run_watchdog` applies the rule in a loop and returns when the host should power off; the
systemd unit around it (cloud-init/gpu-scripts) does the power-off.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WorkerStatus:
    """What one worker last wrote to its status file."""

    name: str
    state: str  # idle | busy | draining | starting
    last_busy_at: float | None
    queue_ok_at: float | None


@dataclass(frozen=True)
class IdleRule:
    idle_s: float
    stale_s: float = 120.0  # how fresh a busy worker's queue contact must be


@dataclass(frozen=True)
class Verdict:
    power_off: bool
    reason: str
    idle_for: float
    queue_lost_for: float


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def read_statuses(directory: Path) -> list[WorkerStatus]:
    """Every `*.json` status file in `directory`; a file being rewritten or unreadable is
    skipped this round (its worker simply does not count as busy)."""
    statuses = []
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        statuses.append(
            WorkerStatus(
                name=path.stem,
                state=str(data.get("state", "")),
                last_busy_at=_number(data.get("last_busy_at")),
                queue_ok_at=_number(data.get("queue_ok_at")),
            )
        )
    return statuses


def decide(
    now: float,
    started_at: float,
    statuses: Sequence[WorkerStatus],
    queue_ok_at: float | None,
    rule: IdleRule,
) -> Verdict:
    """Power off, or not, and why (for the log line that explains a dark GPU)."""
    busy = [
        s
        for s in statuses
        if s.state == "busy" and s.queue_ok_at is not None and now - s.queue_ok_at <= rule.stale_s
    ]
    # A worker still saying `busy` was busy at least until its last queue contact.
    last_activity = max(
        [
            started_at,
            *(s.last_busy_at for s in statuses if s.last_busy_at is not None),
            *(s.queue_ok_at for s in statuses if s.state == "busy" and s.queue_ok_at is not None),
        ]
    )
    if busy:
        last_activity = now
    last_contact = max(
        [
            started_at,
            *([queue_ok_at] if queue_ok_at is not None else []),
            *(s.queue_ok_at for s in statuses if s.queue_ok_at is not None),
        ]
    )
    idle_for = max(0.0, now - last_activity)
    lost_for = max(0.0, now - last_contact)
    limit_min = rule.idle_s / 60
    if lost_for >= rule.idle_s:
        return Verdict(
            True,
            f"queue unreachable for {lost_for / 60:.0f} min (limit {limit_min:g})",
            idle_for,
            lost_for,
        )
    if idle_for >= rule.idle_s:
        return Verdict(
            True, f"idle for {idle_for / 60:.0f} min (limit {limit_min:g})", idle_for, lost_for
        )
    if busy:
        why = f"busy: {', '.join(s.name for s in busy)}"
    else:
        why = f"idle for {idle_for / 60:.1f} of {limit_min:g} min"
    return Verdict(False, why, idle_for, lost_for)


def run_watchdog(
    rule: IdleRule,
    status_dir: Path,
    probe: Callable[[], bool],
    *,
    interval_s: float = 30.0,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] = print,
) -> Verdict:
    """Check every `interval_s`; return the verdict that says to power off."""
    started_at = clock()
    queue_ok_at: float | None = None
    was_busy: bool | None = None
    while True:
        try:
            reachable = probe()
        except Exception as exc:  # a probe that cannot run counts as unreachable
            log(f"queue probe failed: {exc}")
            reachable = False
        if reachable:
            queue_ok_at = clock()
        verdict = decide(clock(), started_at, read_statuses(status_dir), queue_ok_at, rule)
        if verdict.power_off:
            log(f"powering off: {verdict.reason}")
            return verdict
        busy = verdict.reason.startswith("busy")
        if busy != was_busy:  # one line per change, not one per check
            log(verdict.reason)
            was_busy = busy
        sleep(interval_s)


def http_probe(queue_url: str, timeout_s: float = 5.0) -> Callable[[], bool]:
    """True when the queue's health endpoint answers 200."""
    import httpx

    url = queue_url.rstrip("/") + "/api/health"

    def probe() -> bool:
        try:
            return httpx.get(url, timeout=timeout_s).status_code == 200
        except httpx.HTTPError:
            return False

    return probe
