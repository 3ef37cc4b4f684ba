"""The benchmarks still run and end with their one JSON line (tiny sizes: not a measurement)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _last_json_line(*args: str) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_queue_bench_runs() -> None:
    out = _last_json_line(
        "bench.queue", "--jobs", "200", "--warmup", "20", "--gap-samples", "5",
        "--rate", "50", "--rate-seconds", "0.5",
    )
    for key in ("cycles_per_s", "dispatch_gap_p50_ms", "dispatch_gap_p99_ms", "submit_p99_ms"):
        assert isinstance(out[key], float) and out[key] > 0, key
    assert out["leftover_live_jobs"] == 0


def test_memory_bench_runs() -> None:
    out = _last_json_line("bench.memory", "--jobs", "50", "--ui-bytes", "20000")
    assert out["a_bytes_per_1000_jobs"] > 0 and out["b_bytes_per_1000_jobs"] > 0


def test_lua_cost_bench_runs() -> None:
    out = _last_json_line("bench.lua_cost", "--cycles", "40", "--modes", "fair", "fifo")
    for mode in ("fair", "fifo"):
        result = out[mode]
        assert isinstance(result, dict)
        assert result["script_us_per_cycle"] > 0 and result["commands_per_cycle"] > 10


def test_gateway_bench_runs() -> None:
    out = _last_json_line("bench.gateway", "--participants", "2", "3", "--samples", "5")
    assert out["participants"] == 3 and out["samples"] == 5
    for key in ("rss_mb_2", "rss_mb_3", "event_p50_ms", "event_p99_ms"):
        assert isinstance(out[key], float) and out[key] > 0, key


def test_worker_bench_runs() -> None:
    out = _last_json_line(
        "bench.worker", "--jobs", "8", "--job-time", "0.05", "--two-workers-jobs", "4",
        "--users", "1", "--lease-wait", "0.5",
    )  # fmt: skip
    for result in (out, out["two_workers"]):
        assert isinstance(result, dict) and result["failed"] == 0
        assert 0 < result["gpu_utilisation"] <= 1 and result["busy_s"] > 0
        assert result["dispatch_gap_p99_ms"] >= 0 and "overhead_ms_per_job" in result
    assert out["prompts_per_double"] == [8] and sum(out["two_workers"]["prompts_per_double"]) == 4
