"""What the stack costs per hour, from one price table used by the stack output and the docs.

Prices are Hetzner's hourly prices in EUR without VAT (Germany/Finland), as of PRICES_AS_OF,
for the server types an organizer would pick for the control plane; Hetzner changes them
(a portfolio-wide increase on 2026-04-01, new prices for new orders announced for
2026-06-15), so the console's price is the authority. A type missing here is priced as
unknown (a warning, never a failed `up`). Update the table and the docs with
`python -m infra.cost`. R2 storage is billed monthly whether or not the stack runs (the
buckets are kept), so it is not part of the hourly figure.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

PRICES_AS_OF = "2026-05"

# EUR per hour (Hetzner bills hourly up to the monthly cap). The Cost-Optimized line that
# replaced cx22..cx52: cx33 as Hetzner's pricing API reported it (EUR 6.49/month, 0.0104/hour,
# 2026-05-27); the others from the same report's per-vCPU monthly prices at the same
# monthly-to-hourly ratio.
# Arm (cax11..cax31) and Regular Performance (cpx22, cpx32): Hetzner's hourly prices as
# listed, rounded to EUR 0.001, on docs.cnap.tech/compute/providers/hetzner (read
# 2026-12-02; the same figures on docs.akua.dev/compute/providers/hetzner). Hetzner's own
# price list and pricing API were not reachable from where this table was last updated, and
# that page rounds (and lists cx33 at 0.011, not 0.0104): these five are indicative, within
# EUR 0.001. cax41, cpx42, cpx52 and cpx62 are orderable but no checked price was found, so
# they stay priced as unknown (a warning), as any type missing here.
SERVER_EUR_PER_HOUR: dict[str, float] = {
    "cx23": 0.0064,
    "cx33": 0.0104,
    "cx43": 0.0192,
    "cx53": 0.0360,
    "cax11": 0.004,
    "cax21": 0.007,
    "cax31": 0.013,
    "cpx22": 0.008,
    "cpx32": 0.016,
}
PRIMARY_IPV4_EUR_PER_HOUR = 0.0008  # EUR 0.50 / month
VOLUME_EUR_PER_GB_MONTH = 0.0572  # the same report
HOURS_PER_MONTH = 730.0


@dataclass(frozen=True)
class HourlyCost:
    """The parts of one hour of the running stack, in EUR."""

    server: float | None  # None: a type missing from the price table
    ipv4: float
    volume: float
    gpu: float

    @property
    def total(self) -> float | None:
        """The hour's total, or None when the server's price is unknown (never a silent 0)."""
        if self.server is None:
            return None
        return self.server + self.ipv4 + self.volume + self.gpu


def price_warning(vps_type: str) -> str | None:
    """What to tell the organizer when the table has no price for `vps_type`."""
    if vps_type in SERVER_EUR_PER_HOUR:
        return None
    return (
        f"no price for server type {vps_type!r} in infra/cost.py (prices as of {PRICES_AS_OF}); "
        "estimatedCostEurPerHour is left empty: see the Hetzner console for its price"
    )


def hourly_cost(
    vps_type: str, volume_gb: int, gpu_count: int = 0, gpu_eur: float = 0.0
) -> HourlyCost:
    """Cost of one hour; the server part is None for a type the table does not price."""
    server = SERVER_EUR_PER_HOUR.get(vps_type)
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
        total = hourly_cost(vps, vol, gpus, gpu_eur).total
        if total is None:
            raise ValueError(f"scenario {label!r}: no price for {vps!r}")
        rows.append(f"| {label} | {vps} | {total:.4f} | {total * hours:.2f} |")
    return "\n".join(rows)


DEFAULT_SCENARIOS: list[tuple[str, str, int, int, float]] = [
    ("20 participants, defaults (control plane only)", "cx23", 10, 0, 0.0),
    ("200 participants, control plane on cx33", "cx33", 20, 0, 0.0),
    ("20 participants + 2 GPU hosts at EUR 1.00/h", "cx23", 10, 2, 1.0),
]


def main(argv: list[str]) -> int:
    """Print the cost table pasted into docs/runbook.md."""
    hours = float(argv[0]) if argv else 10.0
    print(f"Prices as of {PRICES_AS_OF}, EUR without VAT (infra/cost.py).\n")
    print(day_table(DEFAULT_SCENARIOS, hours))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
