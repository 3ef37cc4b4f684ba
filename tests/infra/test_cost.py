"""The hourly cost: one function for the stack output and the runbook's table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from infra.cost import (
    DEFAULT_SCENARIOS,
    PRIMARY_IPV4_EUR_PER_HOUR,
    SERVER_EUR_PER_HOUR,
    day_table,
    hourly_cost,
)
from tests.infra.harness import WORKER_IMAGE, make_config, run_program

ROOT = Path(__file__).resolve().parents[2]


def test_hourly_cost_adds_up():
    c = hourly_cost("cx22", 10, gpu_count=2, gpu_eur=1.5)
    assert c.total == pytest.approx(
        SERVER_EUR_PER_HOUR["cx22"] + PRIMARY_IPV4_EUR_PER_HOUR + 10 * 0.044 / 730 + 3.0
    )
    with pytest.raises(ValueError, match="cx999"):
        hourly_cost("cx999", 10)


def test_stack_output_uses_cost_module(tmp_path):
    gpu = {"count": 1, "hourlyEur": 2.0, "workerImage": WORKER_IMAGE}
    s = run_program(make_config(tmp_path, gpu=gpu))
    assert s.outputs["estimatedCostEurPerHour"] == round(hourly_cost("cx22", 10, 1, 2.0).total, 4)


def test_runbook_table_is_current():
    out = subprocess.run(
        [sys.executable, "-m", "infra.cost"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert day_table(DEFAULT_SCENARIOS) in out
    assert day_table(DEFAULT_SCENARIOS) in (ROOT / "docs" / "runbook.md").read_text()
