"""Is the configured VPS orderable? Asked of Hetzner's own catalogue before anything is created.

Hetzner retires server types (cx22 and its generation: deprecated 2025-10, not orderable
since early 2026) and runs out of some types in some locations. A type it no longer sells
fails the server's create, which comes after the buckets, tokens, tailnet policy, firewall
and volume already exist: a half-finished `up`. Reading the type with `hcloud.get_server_type`
(one API call, also during `pulumi preview`) turns that into an error on the first line of
the preview that names the config key and what to choose instead.

Both the server type and the image are checked: Hetzner retires images too (deprecated,
then removed once the OS release is out of support), and images exist per architecture (an
Arm cax* type needs the image's arm build), so `hcloud.get_image` is read by name for the
architecture Hetzner gives the type.
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
#: What to suggest when an image cannot be used (Hetzner's current system images).
SUGGESTED_IMAGES = "ubuntu-24.04 or debian-12"


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


def check_image(image: Any, name: str, architecture: str) -> tuple[str, list[str]]:
    """`image`: hcloud's GetImageResult for (name, architecture). Returns (name, warnings).

    The data source itself fails for a name Hetzner does not have ("no image found with
    name ..."); this adds what a deprecated image means for the organizer.
    """
    warnings = []
    if image.deprecation_announced or image.is_deprecated:
        warnings.append(
            f"image {name!r} ({architecture}) is deprecated by Hetzner and will be removed; "
            f"choose another with `pulumi config set {NAMESPACE}:vpsImage <image>` "
            f"(e.g. {SUGGESTED_IMAGES})"
        )
    return name, warnings


def image_not_offered(name: str, architecture: str, error: Exception) -> ConfigError:
    """The data source's error for an image Hetzner does not offer, with the key to change."""
    return ConfigError(
        f"Hetzner does not offer image {name!r} for {architecture} servers ({error}); "
        f"choose another with `pulumi config set {NAMESPACE}:vpsImage <image>` "
        f"(e.g. {SUGGESTED_IMAGES})"
    )


def orderable_vps(
    server_type: str,
    location: str,
    image: str,
    opts: pulumi.InvokeOutputOptions | None = None,
    today: Callable[[], datetime.date] = datetime.date.today,
) -> tuple[pulumi.Output[str], pulumi.Output[str]]:
    """(type, image) as Outputs that resolve only once Hetzner confirmed both can be ordered.

    The server takes both, so it cannot be registered (and the preview fails, before any
    server exists) while either check fails. The image is looked up for the architecture
    Hetzner gives the type.
    """
    result = hcloud.get_server_type_output(name=server_type, opts=opts)

    def checked_type(found: Any) -> str:
        name, warnings = check_server_type(found, location, today())
        for w in warnings:
            pulumi.log.warn(w)
        return name

    async def checked_image(architecture: str) -> str:
        try:
            found = await hcloud.get_image_output(
                name=image, with_architecture=architecture, opts=opts
            ).future()
        except Exception as e:  # the data source's "no image found with name ..."
            raise image_not_offered(image, architecture, e) from None
        name, warnings = check_image(found, image, architecture)
        for w in warnings:
            pulumi.log.warn(w)
        return name

    return result.apply(checked_type), result.architecture.apply(checked_image)
