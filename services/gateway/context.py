"""What every request handler shares (built once at start), and who a request acts for."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from services.contracts import FileType, input_key, user_prefix
from services.gateway.auth import Authenticator, Caller
from services.gateway.catalog import Catalog, upload_names
from services.gateway.frontend import Frontend
from services.gateway.queue_client import QueueClient
from services.gateway.settings import GatewaySettings
from services.storage import ObjectStore

if TYPE_CHECKING:
    from services.gateway.bridge import Bridge


@dataclass
class Gateway:
    settings: GatewaySettings
    queue: QueueClient
    auth: Authenticator
    catalog: Catalog
    store: ObjectStore
    frontend: Frontend
    bridge: Bridge
    #: The models bucket, when configured (`/view_metadata`).
    models: ObjectStore | None = None


@dataclass(frozen=True)
class Space:
    """One participant's ComfyUI (`/userNNN/`), entered by its owner or by the admin."""

    name: str
    caller: Caller

    @property
    def token(self) -> str:
        return self.caller.token

    @property
    def acting_for(self) -> dict[str, str]:
        """The queue's `user=` parameter when the admin acts in a participant's space."""
        return {} if self.caller.user == self.name else {"user": self.name}

    @property
    def prefix(self) -> str:
        return user_prefix(self.name)

    @property
    def input_prefix(self) -> str:
        return input_key(self.name, "", "x")[:-1]

    async def uploads(self, gw: Gateway) -> tuple[list[str], set[str]]:
        """(the combo list of the participant's input folder, every input file name)."""
        keys = [o.key for o in await gw.store.list(self.input_prefix)]
        return upload_names(keys, self.input_prefix)

    def file_type_dir(self, file_type: FileType) -> str:
        return f"{self.prefix}{file_type.value}/"


def params(space: Space, **values: Any) -> dict[str, Any]:
    """Query parameters for the queue, with `user=` when the admin acts for the space."""
    return {**{k: v for k, v in values.items() if v is not None}, **space.acting_for}
