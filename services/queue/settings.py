"""Queue service configuration, read once from ``QUEUE_*`` environment variables."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    Field,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from services.contracts import REDIS_PORT, Mode, Role, validate_user_id


class UserSeed(BaseModel):
    """A user declared in configuration (by the Pulumi program, or local mode)."""

    password_hash: str | None = None
    password: SecretStr | None = None
    role: Role = Role.PARTICIPANT

    @model_validator(mode="after")
    def _one_secret(self) -> UserSeed:
        if (self.password_hash is None) == (self.password is None):
            raise ValueError("give exactly one of password_hash or password")
        return self


def _json_mapping(value: Any) -> Any:
    if isinstance(value, str):
        return json.loads(value) if value.strip() else {}
    return value


class QueueSettings(BaseSettings):
    """Every knob of the queue service; defaults suit a 20-200 person workshop."""

    model_config = SettingsConfigDict(env_prefix="QUEUE_", frozen=True)

    redis_url: str = f"redis://127.0.0.1:{REDIS_PORT}/0"
    key_prefix: str = "cq:"
    token_secret: SecretStr = Field(min_length=32)
    token_ttl_s: int = Field(default=12 * 3600, gt=0)
    admin_password: SecretStr = Field(min_length=8)
    users: Annotated[dict[str, UserSeed], NoDecode] = Field(default_factory=dict)
    worker_tokens: Annotated[dict[str, SecretStr], NoDecode] = Field(default_factory=dict)

    #: The address participants open (`https://workshop.example.org`): the credentials sheet
    #: prints `<public_url>/<user>/`. Unset: the address the admin's request came to.
    public_url: str | None = Field(default=None, pattern=r"^https?://[^/\s]+$")

    mode: Mode = Mode.FAIR
    max_queued_per_user: PositiveInt = 20
    max_running_per_user: PositiveInt = 2
    max_attempts: PositiveInt = 3
    lease_ttl_s: PositiveFloat = 30.0
    lease_wait_max_s: PositiveFloat = 30.0
    worker_lost_after_s: PositiveFloat = 60.0
    reap_interval_s: PositiveFloat = 1.0

    max_body_bytes: PositiveInt = 2 * 1024 * 1024
    #: A worker's node catalogue (/object_info) once inflated; it arrives gzipped.
    max_catalog_bytes: PositiveInt = 64 * 1024 * 1024
    history_per_user: PositiveInt = 200
    retention_s: PositiveInt = 7 * 24 * 3600
    events_maxlen: int = Field(default=50_000, gt=100)
    #: Redis connections per replica. Past that, a request waits for one (up to
    #: `redis_pool_timeout_s`) instead of failing: a room reloading at once is > 100 requests.
    redis_max_connections: PositiveInt = 256
    redis_pool_timeout_s: PositiveFloat = 20.0
    #: Password hashes at once per replica, and callers allowed to wait for one.
    login_concurrency: PositiveInt = 4
    login_queue: int = Field(default=64, ge=0)
    #: Failed logins allowed per user and per address within the window, then 429.
    login_failures_per_user: PositiveInt = 10
    login_failures_per_address: PositiveInt = 50
    login_window_s: PositiveInt = 300

    @field_validator("users", "worker_tokens", mode="before")
    @classmethod
    def _parse_json(cls, value: Any) -> Any:
        return _json_mapping(value)

    # validate_user_id (services/contracts.py): also refuses the route plan's root names.
    @field_validator("users")
    @classmethod
    def _valid_user_ids(cls, value: dict[str, UserSeed]) -> dict[str, UserSeed]:
        for uid in value:
            validate_user_id(uid)
        return value

    @model_validator(mode="after")
    def _history_holds_live_jobs(self) -> QueueSettings:
        live = self.max_queued_per_user + self.max_running_per_user
        if self.history_per_user < live:
            raise ValueError(
                f"history_per_user ({self.history_per_user}) must be at least "
                f"max_queued_per_user + max_running_per_user ({live})"
            )
        return self

