"""What the stack does on Verda, over Verda's official SDK (`verda` on PyPI).

Thin on purpose: the SDK owns the routes, the OAuth client-credentials flow and the payloads;
this module adds what the dynamic provider (infra/verda_provider.py) needs on top: a stock
check that names the alternatives on offer, waiting for an instance to run, and a delete that
takes the OS volume with it (Verda keeps a deleted instance's volumes, billed, unless told).
Credentials come from the environment, like every other provider's: VERDA_CLIENT_ID,
VERDA_CLIENT_SECRET, and VERDA_API_URL to point at another API (the tests' fake).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from verda import VerdaClient
from verda.exceptions import APIException

DEFAULT_API_URL = "https://api.verda.com/v1"
#: Statuses of an instance that is gone for good (it will not come back by starting it).
GONE = frozenset({"discontinued", "deleted", "deleting"})
RUNNING = "running"
OFFLINE = "offline"


class VerdaError(RuntimeError):
    """Verda refused or failed; the message says what to do."""


class MissingCredentials(VerdaError):
    pass


class OutOfStock(VerdaError):
    """The instance type is not available where and how it was asked for."""

    def __init__(self, instance_type: str, location: str, spot: bool, offers: dict[str, list[str]]):
        self.instance_type, self.location, self.spot, self.offers = (
            instance_type,
            location,
            spot,
            offers,
        )
        kind = "spot" if spot else "on-demand"
        elsewhere = sorted(loc for loc, types in offers.items() if instance_type in types)
        here = offers.get(location, [])
        lines = [f"Verda has no {kind} {instance_type} in {location} right now."]
        if elsewhere:
            lines.append(
                f"{instance_type} is available in {', '.join(elsewhere)}: "
                f"pulumi config set --path 'workshop:gpu.location' {elsewhere[0]}"
            )
        if here:
            lines.append(
                f"Available in {location}: {', '.join(sorted(here))}: "
                f"pulumi config set --path 'workshop:gpu.instanceType' {sorted(here)[0]}"
            )
        if not elsewhere and not here:
            lines.append(f"Nothing is available {kind} anywhere now; try again later.")
        super().__init__(" ".join(lines))


@dataclass(frozen=True)
class Credentials:
    client_id: str
    client_secret: str
    api_url: str = DEFAULT_API_URL

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, api_url: str | None = None
    ) -> Credentials:
        env = os.environ if env is None else env
        client_id, secret = env.get("VERDA_CLIENT_ID", ""), env.get("VERDA_CLIENT_SECRET", "")
        if not client_id or not secret:
            raise MissingCredentials(
                "set VERDA_CLIENT_ID and VERDA_CLIENT_SECRET (Verda console: Keys, "
                "Cloud API credentials) in the environment of `pulumi up`"
            )
        return cls(client_id, secret, api_url or env.get("VERDA_API_URL") or DEFAULT_API_URL)


def _is_not_found(exc: APIException) -> bool:
    return exc.code == "not_found"


@dataclass(frozen=True)
class Waits:
    """How long to wait and how often to look (the tests make these tiny)."""

    poll_s: float = 5.0
    create_s: float = 20 * 60.0
    delete_s: float = 10 * 60.0
    sleep: Callable[[float], None] = time.sleep


class Verda:
    """One authenticated session (the SDK exchanges the client credentials for a token)."""

    def __init__(self, credentials: Credentials, waits: Waits | None = None) -> None:
        try:
            self.client = VerdaClient(
                credentials.client_id, credentials.client_secret, base_url=credentials.api_url
            )
        except APIException as exc:
            raise VerdaError(f"Verda refused the client credentials: {exc.message}") from None
        self.waits = waits or Waits()

    # -- stock and prices ---------------------------------------------------------------------
    def offers(self, spot: bool) -> dict[str, list[str]]:
        """Instance types available now, by location."""
        return {
            entry["location_code"]: list(entry.get("availabilities", []))
            for entry in self.client.instances.get_availabilities(is_spot=spot)
        }

    def check_stock(self, instance_type: str, location: str, spot: bool) -> None:
        if not self.client.instances.is_available(instance_type, spot, location):
            raise OutOfStock(instance_type, location, spot, self.offers(spot))

    def hourly_eur(self, instance_type: str, spot: bool) -> float | None:
        for entry in self.client.instance_types.get(currency="eur"):
            if entry.instance_type == instance_type:
                return entry.spot_price_per_hour if spot else entry.price_per_hour
        return None

    # -- startup scripts and SSH keys -----------------------------------------------------------
    def create_script(self, name: str, script: str) -> str:
        return str(self.client.startup_scripts.create(name, script).id)

    def delete_script(self, script_id: str) -> None:
        self._ignore_missing(self.client.startup_scripts.delete_by_id, script_id)

    def create_ssh_key(self, name: str, public_key: str) -> str:
        return str(self.client.ssh_keys.create(name, public_key).id)

    def ssh_key_exists(self, key_id: str) -> bool:
        try:
            self.client.ssh_keys.get_by_id(key_id)
        except APIException as exc:
            if _is_not_found(exc):
                return False
            raise
        return True

    def delete_ssh_key(self, key_id: str) -> None:
        self._ignore_missing(self.client.ssh_keys.delete_by_id, key_id)

    # -- instances --------------------------------------------------------------------------------
    def create_instance(self, spec: Mapping[str, Any], script_id: str) -> str:
        """Order an instance; its id. An out-of-stock answer becomes OutOfStock with offers."""
        os_volume: dict[str, Any] = {"name": f"{spec['hostname']}-os", "size": spec["osVolumeGb"]}
        if spec["spot"]:
            # A reclaimed spot instance must not leave its disk behind, billed.
            os_volume["on_spot_discontinue"] = "delete_permanently"
        try:
            instance = self.client.instances.create(
                instance_type=spec["instanceType"],
                image=spec["image"],
                hostname=spec["hostname"],
                description=spec["description"],
                ssh_key_ids=list(spec["sshKeyIds"]),
                location=spec["location"],
                startup_script_id=script_id,
                os_volume=os_volume,
                is_spot=bool(spec["spot"]),
                wait_for_status=None,
            )
        except APIException as exc:
            if exc.code == "service_unavailable":
                raise OutOfStock(
                    spec["instanceType"],
                    spec["location"],
                    bool(spec["spot"]),
                    self.offers(spec["spot"]),
                ) from None
            raise VerdaError(f"Verda refused the instance: {exc.message} ({exc.code})") from None
        return str(instance.id)

    def get_instance(self, instance_id: str) -> Any | None:
        """The instance, or None when it no longer exists (deleted outside Pulumi)."""
        try:
            instance = self.client.instances.get_by_id(instance_id)
        except APIException as exc:
            if _is_not_found(exc):
                return None
            raise
        return None if instance.status in GONE else instance

    def wait_for(self, instance_id: str, status: str, timeout_s: float) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            instance = self.get_instance(instance_id)
            if instance is None:
                raise VerdaError(f"instance {instance_id} disappeared while starting")
            if instance.status == status:
                return instance
            if instance.status == "error":
                raise VerdaError(f"instance {instance_id} failed to provision (status error)")
            if time.monotonic() >= deadline:
                raise VerdaError(
                    f"instance {instance_id} is still {instance.status} after {timeout_s:.0f} s"
                )
            self.waits.sleep(self.waits.poll_s)

    def start(self, instance_id: str) -> Any:
        self.client.instances.action(instance_id, "start")
        return self.wait_for(instance_id, RUNNING, self.waits.create_s)

    def shutdown(self, instance_id: str) -> Any:
        self.client.instances.action(instance_id, "shutdown")
        return self.wait_for(instance_id, OFFLINE, self.waits.delete_s)

    def resize_volume(self, volume_id: str, size_gb: int) -> None:
        self.client.volumes.increase_size(volume_id, size_gb)

    def delete_instance(self, instance_id: str, os_volume_id: str | None) -> None:
        """Delete the instance and its OS volume permanently; done only when both are gone."""
        if self.get_instance(instance_id) is not None:
            try:
                self.client.instances.action(
                    instance_id,
                    "delete",
                    volume_ids=[os_volume_id] if os_volume_id else None,
                    delete_permanently=bool(os_volume_id),
                )
            except APIException as exc:
                if not _is_not_found(exc):
                    raise
            deadline = time.monotonic() + self.waits.delete_s
            while self.get_instance(instance_id) is not None:
                if time.monotonic() >= deadline:
                    raise VerdaError(f"instance {instance_id} still exists after delete")
                self.waits.sleep(self.waits.poll_s)
        if os_volume_id:
            self.delete_volume(os_volume_id)

    def delete_volume(self, volume_id: str) -> None:
        """Permanently, so it is neither kept detached nor left in the (billed) trash."""
        self._ignore_missing(
            lambda v: self.client.volumes.delete_by_id(v, is_permanent=True), volume_id
        )

    @staticmethod
    def _ignore_missing(call: Callable[[str], object], resource_id: str) -> None:
        try:
            call(resource_id)
        except APIException as exc:
            if not _is_not_found(exc):
                raise
