"""The hourly cost: one function for the stack output and the runbook's table."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from infra.catalogue import SUGGESTED_TYPES
from infra.config import WorkshopConfig
from infra.cost import (
    DEFAULT_SCENARIOS,
    PRIMARY_IPV4_EUR_PER_HOUR,
    SERVER_EUR_PER_HOUR,
    VOLUME_EUR_PER_GB_MONTH,
    day_table,
    hourly_cost,
    price_warning,
)
from tests.infra.harness import (
    DOCUMENTED_CONFIGS,
    SERVER_TYPES,
    WITHDRAWN,
    WORKER_IMAGE,
    make_config,
    run_program,
)

ROOT = Path(__file__).resolve().parents[2]


def test_hourly_cost_adds_up():
    c = hourly_cost("cx23", 10, gpu_count=2, gpu_eur=1.5)
    assert c.total == pytest.approx(
        SERVER_EUR_PER_HOUR["cx23"]
        + PRIMARY_IPV4_EUR_PER_HOUR
        + 10 * VOLUME_EUR_PER_GB_MONTH / 730
        + 3.0
    )


def test_price_table_lists_only_types_hetzner_sells():
    """No price for a withdrawn type (the table would hide that it cannot be ordered), and
    the default type and its larger siblings are priced."""
    assert set(SERVER_EUR_PER_HOUR) <= set(SERVER_TYPES) - WITHDRAWN
    default = WorkshopConfig.__dataclass_fields__["vps_type"].default
    assert {default, "cx33"} <= set(SERVER_EUR_PER_HOUR)
    assert all(vps in SERVER_EUR_PER_HOUR for _, vps, *_ in DEFAULT_SCENARIOS)
    # What the docs and the pre-flight's error tell an organizer to choose must be priced.
    suggested = set(re.findall(r"\b(c[a-z]{1,2}\d{2})\b", SUGGESTED_TYPES))
    assert suggested == {"cx23", "cax11", "cpx22"}
    documented = {c["vpsType"] for c in DOCUMENTED_CONFIGS.values() if "vpsType" in c}
    assert "cax11" in documented
    assert suggested | documented <= set(SERVER_EUR_PER_HOUR)


def test_unknown_price_is_a_warning_not_a_failed_up(tmp_path):
    """ccx13 is on sale but not in the table: the stack deploys, its cost is left empty."""
    assert hourly_cost("ccx13", 10).total is None
    assert "ccx13" in price_warning("ccx13") and price_warning("cx23") is None
    s = run_program(make_config(tmp_path, vpsType="ccx13"))
    assert s.outputs["estimatedCostEurPerHour"] is None
    assert s.one("hcloud:index/server:Server", "server").inputs["serverType"] == "ccx13"


def test_stack_output_uses_cost_module(tmp_path):
    gpu = {"count": 1, "hourlyEur": 2.0, "workerImage": WORKER_IMAGE}
    s = run_program(make_config(tmp_path, gpu=gpu))
    assert s.outputs["estimatedCostEurPerHour"] == round(hourly_cost("cx23", 10, 1, 2.0).total, 4)


def test_runbook_table_is_current():
    out = subprocess.run(
        [sys.executable, "-m", "infra.cost"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert day_table(DEFAULT_SCENARIOS) in out
    assert day_table(DEFAULT_SCENARIOS) in (ROOT / "docs" / "runbook.md").read_text()
