"""What the stack costs per hour, from one price table used by the stack output and the docs.

Prices are Hetzner's public hourly list prices in EUR without VAT (Germany/Finland
locations), as of the date in PRICES_AS_OF; update them here and the docs with
`python -m infra.cost`. R2 storage is billed monthly whether or not the stack runs
(the buckets are kept), so it is not part of the hourly figure.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

PRICES_AS_OF = "2025-06"

# EUR per hour (Hetzner bills hourly up to the monthly cap).
SERVER_EUR_PER_HOUR: dict[str, float] = {
    "cx22": 0.0060,
    "cx32": 0.0109,
    "cx42": 0.0263,
    "cx52": 0.0519,
    "cpx11": 0.0070,
    "cpx21": 0.0127,
    "cpx31": 0.0235,
    "cax11": 0.0060,
    "cax21": 0.0104,
}
PRIMARY_IPV4_EUR_PER_HOUR = 0.0008  # EUR 0.50 / month
VOLUME_EUR_PER_GB_MONTH = 0.044
HOURS_PER_MONTH = 730.0


@dataclass(frozen=True)
class HourlyCost:
    """The parts of one hour of the running stack, in EUR."""

    server: float
    ipv4: float
    volume: float
    gpu: float

    @property
    def total(self) -> float:
        return self.server + self.ipv4 + self.volume + self.gpu


def hourly_cost(
    vps_type: str, volume_gb: int, gpu_count: int = 0, gpu_eur: float = 0.0
) -> HourlyCost:
    """Cost of one hour; an unknown server type is an error, not a silent zero."""
    try:
        server = SERVER_EUR_PER_HOUR[vps_type]
    except KeyError:
        raise ValueError(
            f"no price for server type {vps_type!r}; add it to infra/cost.py SERVER_EUR_PER_HOUR"
        ) from None
    return HourlyCost(
        server=server,
        ipv4=PRIMARY_IPV4_EUR_PER_HOUR,
        volume=volume_gb * VOLUME_EUR_PER_GB_MONTH / HOURS_PER_MONTH,
        gpu=gpu_count * gpu_eur,
    )


def day_table(scenarios: list[tuple[str, str, int, int, float]], hours: float = 10.0) -> str:
    """Markdown table: one row per (label, vps_type, volume_gb, gpu_count, gpu_eur)."""
    rows = [
        f"| Scenario | VPS | EUR/hour | EUR per {hours:g}-hour day |",
        "|---|---|---:|---:|",
    ]
    for label, vps, vol, gpus, gpu_eur in scenarios:
        cost = hourly_cost(vps, vol, gpus, gpu_eur)
        rows.append(f"| {label} | {vps} | {cost.total:.4f} | {cost.total * hours:.2f} |")
    return "\n".join(rows)


DEFAULT_SCENARIOS: list[tuple[str, str, int, int, float]] = [
    ("20 participants, defaults (control plane only)", "cx22", 10, 0, 0.0),
    ("200 participants, control plane on cx32", "cx32", 20, 0, 0.0),
    ("20 participants + 2 GPU hosts at EUR 1.00/h", "cx22", 10, 2, 1.0),
]


def main(argv: list[str]) -> int:
    """Print the cost table pasted into docs/runbook.md."""
    hours = float(argv[0]) if argv else 10.0
    print(f"Prices as of {PRICES_AS_OF}, EUR without VAT (infra/cost.py).\n")
    print(day_table(DEFAULT_SCENARIOS, hours))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
