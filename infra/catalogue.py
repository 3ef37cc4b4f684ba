"""Is the configured VPS orderable? Asked of Hetzner's own catalogue before anything is created.

Hetzner retires server types (cx22 and its generation: deprecated 2025-10, not orderable
since early 2026) and runs out of some types in some locations. A type it no longer sells
fails the server's create, which comes after the buckets, tokens, tailnet policy, firewall
and volume already exist: a half-finished `up`. Reading the type with `hcloud.get_server_type`
(one API call, also during `pulumi preview`) turns that into an error on the first line of
the preview that names the config key and what to choose instead.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import pulumi
import pulumi_hcloud as hcloud

from infra.config import NAMESPACE, ConfigError

#: What to suggest when a type cannot be ordered (Hetzner's current shared-vCPU lines).
SUGGESTED_TYPES = "cx23 (x86, EU), cax11 (Arm, EU) or cpx22 (x86, all locations)"


def check_server_type(
    server_type: Any, location: str, today: datetime.date
) -> tuple[str, list[str]]:
    """`server_type`: hcloud's GetServerTypeResult. Returns (name, warnings) or raises."""
    fix = (
        f"choose another with `pulumi config set {NAMESPACE}:vpsType <type>` "
        f"(e.g. {SUGGESTED_TYPES}) or `pulumi config set {NAMESPACE}:vpsLocation <location>`"
    )
    name = server_type.name
    offered = {loc.name: loc for loc in server_type.locations or []}
    entry = offered.get(location)
    if entry is None:
        where = ", ".join(sorted(offered)) or "nowhere"
        raise ConfigError(
            f"Hetzner does not offer server type {name!r} in {location!r} "
            f"(offered in: {where}); {fix}"
        )
    if entry.unavailable_after:
        until = datetime.date.fromisoformat(entry.unavailable_after[:10])
        if until <= today:
            raise ConfigError(
                f"Hetzner withdrew server type {name!r} in {location!r} on {until}; {fix}"
            )
    if not entry.available:
        raise ConfigError(
            f"Hetzner has server type {name!r} temporarily out of stock in {location!r}; {fix}"
        )
    warnings = []
    if entry.is_deprecated:
        last = f" after {entry.unavailable_after[:10]}" if entry.unavailable_after else " soon"
        warnings.append(
            f"server type {name!r} is deprecated by Hetzner and cannot be ordered{last}; {fix}"
        )
    return name, warnings


def orderable_server_type(
    server_type: str,
    location: str,
    opts: pulumi.InvokeOutputOptions | None = None,
    today: Callable[[], datetime.date] = datetime.date.today,
) -> pulumi.Output[str]:
    """The type's name once Hetzner confirmed it can be ordered in `location` (else an error).

    The server's `server_type` is this Output, so the server cannot be registered (and the
    preview fails) before the check passed.
    """

    def checked(result: Any) -> str:
        name, warnings = check_server_type(result, location, today())
        for w in warnings:
            pulumi.log.warn(w)
        return name

    return hcloud.get_server_type_output(name=server_type, opts=opts).apply(checked)
