"""Gateway configuration, read once from ``GATEWAY_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.contracts import GATEWAY_PORT, QUEUE_PORT
from services.storage import StorageSettings

#: ComfyUI's default `--max-upload-size` (MiB), which its `/features` reports in bytes.
DEFAULT_MAX_UPLOAD_BYTES = 100 * 1024 * 1024


class GatewaySettings(BaseSettings):
    """Every knob of the participant gateway. It keeps no state of its own: the queue holds
    the jobs and the users, object storage the files."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", env_nested_delimiter="__", frozen=True)

    queue_url: str = Field(
        default=f"http://127.0.0.1:{QUEUE_PORT}",
        description="the queue's base URL (its HTTP API and /api/events WebSocket)",
    )
    host: str = "0.0.0.0"
    port: int = GATEWAY_PORT
    storage: StorageSettings
    models: StorageSettings | None = Field(
        default=None,
        description="the models bucket (keys <folder>/<file>, as `services.fleet models` fills "
        "it): /view_metadata reads a pool model's safetensors header from it; unset: 404",
    )
    public_url: str | None = Field(
        default=None,
        description="https://<domain>: session cookies are marked Secure when it is https",
    )
    auth_cache_s: float = Field(
        default=300.0, gt=0, description="how long a checked credential is trusted"
    )
    catalog_check_s: float = Field(
        default=5.0, ge=0, description="how often the pool catalogue's ETag is re-checked"
    )
    max_upload_bytes: int = Field(default=DEFAULT_MAX_UPLOAD_BYTES, gt=0)
    max_json_bytes: int = Field(
        default=32 * 1024 * 1024, gt=0, description="a /prompt or /userdata body at most"
    )
    asset_cache_dir: Path | None = Field(
        default=None,
        description="where the frontend's precompressed assets are kept (default: a folder "
        "under the system's temporary directory, shared by replicas on one host)",
    )
    precompress: bool = Field(default=True, description="gzip the frontend assets at start")
    upstream_idle_s: float = Field(
        default=30.0,
        ge=0,
        description="how long a participant's event subscription stays open after their last "
        "socket closed (a page reload reuses it)",
    )

    @field_validator("queue_url")
    @classmethod
    def _plain_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(
                f"GATEWAY_QUEUE_URL must be an http(s) URL such as http://queue:8000, not {value!r}"
            )
        return value.rstrip("/")

    @property
    def secure_cookies(self) -> bool:
        return bool(self.public_url and self.public_url.startswith("https://"))
