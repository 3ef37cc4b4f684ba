"""The queue's throughput on this tree against the tree before hardening (issue 13: at most 15 %
slower), measured in one run, rounds alternating which tree goes first.

    uv run python -m bench.compare_before [--rounds 5] [--jobs 2000] [--before /tmp/before]

`--before` is a git worktree of the commit before hardening (884b921^); made with
`git worktree add --detach` when missing. Each round runs bench/queue.py's throughput case in
both trees (its other phases cut to a token size; the burst off), in this interpreter, so the
libraries are the same. The ratio compares this tree as a whole — hardening and whatever else
landed since — with that commit. On a shared machine the CPU other processes take moves cycles/s
from run to run; service CPU per cycle moves less, so both are reported.

Ends with exactly one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BEFORE_COMMIT = "884b921^"
KEYS = ("cycles_per_s", "service_cpu_ms_per_cycle", "redis_cpu_ms_per_cycle", "cpu_other_pct")
#: The limit the issue sets: this tree may be at most this much slower.
MAX_SLOWDOWN = 0.15


def ensure_before(path: Path) -> None:
    if not (path / "bench" / "queue.py").exists():
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(path), BEFORE_COMMIT], cwd=ROOT, check=True
        )


def one_run(tree: Path, jobs: int, warmup: int, new: bool) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "bench.queue", "--jobs", str(jobs), "--warmup", str(warmup),
        "--gap-samples", "5", "--rate", "20", "--rate-seconds", "0.5",
    ]  # fmt: skip
    if new:
        cmd += ["--burst-reads", "0", "--burst-participants", "0"]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"{tree}: {out.stdout[-1500:]}{out.stderr[-1500:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {k: result[k] for k in KEYS}


def head(tree: Path) -> str:
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True
    )
    return out.stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--before", type=Path, default=Path("/tmp/before"))  # noqa: S108
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=200)
    args = ap.parse_args()
    ensure_before(args.before)
    runs: dict[str, list[dict[str, Any]]] = {"after": [], "before": []}
    for i in range(args.rounds):
        order = [("after", ROOT), ("before", args.before)]
        for name, tree in order if i % 2 == 0 else order[::-1]:
            r = one_run(tree, args.jobs, args.warmup, name == "after")
            runs[name].append(r)
            print(f"round {i + 1} {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in r.items()),
                  flush=True)  # fmt: skip
    med = {n: {k: statistics.median(r[k] for r in rs) for k in KEYS} for n, rs in runs.items()}
    ratio = med["after"]["cycles_per_s"] / med["before"]["cycles_per_s"]
    cpu_ratio = med["after"]["service_cpu_ms_per_cycle"] / med["before"]["service_cpu_ms_per_cycle"]
    result = {
        "rounds": args.rounds,
        "jobs": args.jobs,
        "before_commit": head(args.before),
        "after_commit": head(ROOT),
        "median_before": med["before"],
        "median_after": med["after"],
        "cycles_ratio_after_over_before": ratio,
        "service_cpu_per_cycle_ratio": cpu_ratio,
        "within_15pct": ratio >= 1 - MAX_SLOWDOWN,
        "runs": runs,
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
