"""bench/chaos.py, short: 60 jobs through stand-in worker processes while a worker process, the
queue service and Redis (AOF, fsync always) are each killed and started again; nothing may be
lost, run to success twice, or left hanging (issue 13). 0.2 s of pretend work per job keeps
jobs in flight across all three kills (the worker's requeue alone takes the 2 s lease TTL)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.chaos import LEASE_TTL_S

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(150)
def test_chaos_loses_duplicates_and_strands_nothing() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.chaos", "--jobs", "60", "--work-s", "0.2",
         "--settle-s", "20"],
        cwd=ROOT, capture_output=True, text=True, timeout=140,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["killed"][0].startswith("worker") and out["killed"][1:] == ["service", "redis"]
    assert out["acknowledged"] + out["unanswered_that_exist"] >= 55, out
    assert (out["lost"], out["duplicated"], out["stuck"], out["failed"]) == (0, 0, 0, 0), out
    assert out["succeeded"] == out["acknowledged"] + out["unanswered_that_exist"], out
    # The killed worker's job went to another worker after its lease ran out, not before.
    requeue = out["requeue_after_kill_s"]
    assert requeue is not None and LEASE_TTL_S * 0.8 <= requeue <= LEASE_TTL_S + 5, out
