"""The idle power-off rule on a fake clock: busy, idle, queue unreachable; and the watchdog
loop that applies it to real status files (the shape the worker writes, brief 5.1)."""

from __future__ import annotations

import json

import pytest

from services.fleet.__main__ import main
from services.fleet.idle import IdleRule, WorkerStatus, decide, read_statuses, run_watchdog

MIN = 60.0
RULE = IdleRule(idle_s=20 * MIN, stale_s=2 * MIN)
T0 = 1_700_000_000.0


def status(state: str, last_busy_at: float | None, queue_ok_at: float | None) -> WorkerStatus:
    return WorkerStatus("w", state, last_busy_at, queue_ok_at)


def test_a_busy_worker_keeps_the_host_on():
    now = T0 + 3 * 60 * MIN  # hours after boot: a long job is still running
    verdict = decide(now, T0, [status("busy", T0, now - 10)], now - 5, RULE)
    assert not verdict.power_off and verdict.reason.startswith("busy")


def test_idle_for_the_limit_powers_off_counted_from_the_last_job():
    last_job = T0 + 30 * MIN
    idle = [status("idle", last_job, None)]
    for minutes, off in ((19.9, False), (20, True)):
        now = last_job + minutes * MIN
        verdict = decide(now, T0, idle, queue_ok_at=now - 1, rule=RULE)
        assert verdict.power_off is off, minutes
    assert "idle for 20 min" in verdict.reason


def test_after_boot_the_idle_clock_starts_at_the_watchdog_start():
    # No worker has written anything yet (still loading models): not idle before the limit.
    assert not decide(T0 + 19 * MIN, T0, [], T0 + 19 * MIN, RULE).power_off
    assert decide(T0 + 20 * MIN, T0, [], T0 + 20 * MIN, RULE).power_off


def test_an_unreachable_queue_counts_as_idle_even_while_a_worker_claims_busy():
    """A failed or forgotten destroy: the queue is gone, the GPU must not stay billed."""
    last_contact = T0 + 60 * MIN
    now = last_contact + 20 * MIN
    statuses = [status("busy", last_contact, last_contact)]
    verdict = decide(now, T0, statuses, queue_ok_at=last_contact, rule=RULE)
    assert verdict.power_off and "queue unreachable for 20 min" in verdict.reason
    # One minute less: still waiting (a queue restart must not power the fleet off).
    assert not decide(now - MIN, T0, statuses, last_contact, RULE).power_off


def test_a_stale_busy_file_from_a_dead_worker_does_not_keep_the_host_on():
    now = T0 + 2 * 60 * MIN
    dead = status("busy", T0 + 10 * MIN, T0 + 10 * MIN)  # wrote "busy", then died
    verdict = decide(now, T0, [dead], queue_ok_at=now - 3, rule=RULE)
    assert verdict.power_off and verdict.reason.startswith("idle for")


def test_any_one_busy_worker_of_several_counts():
    now = T0 + 90 * MIN
    statuses = [
        status("idle", T0, now),
        status("busy", now - 5, now - 5),
        status("starting", None, None),
    ]
    assert not decide(now, T0, statuses, now, RULE).power_off


def write_status(path, **fields):
    path.write_text(json.dumps({"job": None, "comfyui": "up", "jobs_done": 3} | fields))


class FakeClock:
    """Time moves only when the watchdog sleeps; each tick can change the world."""

    def __init__(self, start: float) -> None:
        self.now = start
        self.sleeps = 0
        self.on_tick = lambda now: None

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds
        self.on_tick(self.now)


def test_the_watchdog_powers_off_when_the_last_job_is_idle_minutes_ago(tmp_path):
    clock = FakeClock(T0)
    worker = tmp_path / "worker-0.json"
    job_ends = T0 + 10 * MIN

    def world(now: float) -> None:
        busy = now < job_ends
        write_status(
            worker,
            state="busy" if busy else "idle",
            last_busy_at=min(now, job_ends),
            queue_ok_at=now,
        )

    world(T0)
    clock.on_tick = world
    lines: list[str] = []
    verdict = run_watchdog(
        RULE,
        tmp_path,
        probe=lambda: True,
        interval_s=MIN,
        clock=clock,
        sleep=clock.sleep,
        log=lines.append,
    )
    assert verdict.power_off and "idle for 20 min" in verdict.reason
    assert clock.now == job_ends + 20 * MIN
    assert lines[0].startswith("busy") and lines[-1].startswith("powering off")


def test_the_watchdog_powers_off_when_the_queue_stops_answering(tmp_path):
    clock = FakeClock(T0)
    worker = tmp_path / "worker-0.json"
    gone_at = T0 + 5 * MIN

    def world(now: float) -> None:  # a long job; its heartbeats fail once the queue is gone
        if now < gone_at:
            write_status(worker, state="busy", last_busy_at=T0, queue_ok_at=now)

    world(T0)
    clock.on_tick = world
    verdict = run_watchdog(
        RULE,
        tmp_path,
        probe=lambda: clock.now < gone_at,
        interval_s=MIN,
        clock=clock,
        sleep=clock.sleep,
        log=lambda line: None,
    )
    assert verdict.power_off and "queue unreachable" in verdict.reason
    assert clock.now == T0 + 4 * MIN + 20 * MIN  # last good probe at minute 4


def test_a_probe_that_raises_counts_as_unreachable(tmp_path):
    clock = FakeClock(T0)

    def broken() -> bool:
        raise OSError("no route to host")

    lines: list[str] = []
    verdict = run_watchdog(
        RULE,
        tmp_path,
        broken,
        interval_s=5 * MIN,
        clock=clock,
        sleep=clock.sleep,
        log=lines.append,
    )
    assert verdict.power_off and any("no route to host" in line for line in lines)


def test_unreadable_or_partial_status_files_are_skipped(tmp_path):
    (tmp_path / "a.json").write_text('{"state": "busy", "last_busy_at": 1, "queue_ok_at": 2}')
    (tmp_path / "b.json").write_text('{"state": "bu')  # being rewritten
    (tmp_path / "c.json").write_text("[]")
    (tmp_path / "notes.txt").write_text("x")
    assert read_statuses(tmp_path) == [WorkerStatus("a", "busy", 1.0, 2.0)]


def test_the_cli_watchdog_exits_zero_to_power_off(tmp_path, capsys):
    """No queue listening and a zero idle limit: the first check says power off."""
    code = main(
        [
            "--manifest",
            str(tmp_path / "absent.yaml"),  # the worker image ships no manifest of its own
            "watchdog",
            "--status-dir",
            str(tmp_path),
            "--queue-url",
            "http://127.0.0.1:9",  # discard port: nothing answers
            "--idle-minutes",
            "0",
            "--interval",
            "0",
        ]
    )
    assert code == 0
    assert "powering off" in capsys.readouterr().out


@pytest.mark.parametrize("bad", [True, "12", None])
def test_non_numeric_times_are_ignored(tmp_path, bad):
    (tmp_path / "w.json").write_text(json.dumps({"state": "busy", "queue_ok_at": bad}))
    (status_,) = read_statuses(tmp_path)
    assert status_.queue_ok_at is None
