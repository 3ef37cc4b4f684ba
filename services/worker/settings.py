"""The worker's configuration, from `WORKER_*` environment variables (team brief 5.1), checked
at start with messages that say what is wrong and how to fix it."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.contracts import COMFYUI_PORT, QUEUE_PORT, WORKER_TOKEN_PREFIX
from services.storage import StorageSettings

DEFAULT_COMFYUI_URL = f"http://127.0.0.1:{COMFYUI_PORT}"

#: How to fix each setting, shown beside the validation error.
HINTS: dict[str, str] = {
    "queue_url": f"the queue's URL as this host reaches it, e.g. http://100.64.0.1:{QUEUE_PORT} "
    f"(the VPS's tailnet address) or http://127.0.0.1:{QUEUE_PORT} locally",
    "token": f"this host's worker token ({WORKER_TOKEN_PREFIX}...): `workshop` CLI, "
    "POST /api/admin/worker-tokens, or data/credentials.json in local mode",
    "instance": "a short name for this worker on its host, e.g. gpu0-1 (letters, digits, . _ -)",
    "comfyui_url": f"the URL of a running ComfyUI, e.g. {DEFAULT_COMFYUI_URL}",
    "comfyui_dir": "a ComfyUI checkout (the folder holding main.py) for the worker to start",
    "comfyui_port": "the port for the ComfyUI this worker starts, 1-65535",
    "cuda_device": "the GPU index for ComfyUI's --cuda-device, e.g. 0",
    "extra_model_paths": "an existing extra_model_paths.yaml",
    "comfyui_threads": "OMP/MKL threads per ComfyUI, 1 or more (2: see GPU.md)",
    "storage": "WORKER_STORAGE__DIR=<folder> (local) or WORKER_STORAGE__BUCKET, "
    "WORKER_STORAGE__ENDPOINT, WORKER_STORAGE__ACCESS_KEY_ID, WORKER_STORAGE__SECRET_ACCESS_KEY",
    "hourly_eur": "the price of this worker's share of the GPU in EUR per hour, e.g. 0.55",
    "idle_exit_s": "seconds without work before the worker exits (0: never)",
    "shutdown_grace_s": "seconds a running job may take to finish after SIGTERM",
    "models_manifest": "an existing models.yaml (the placement check at start)",
}


class WorkerSettings(BaseSettings):
    """Every knob of one worker (one ComfyUI). Attach to a running ComfyUI (`comfyui_url`) or
    start one from a checkout (`comfyui_dir`)."""

    model_config = SettingsConfigDict(env_prefix="WORKER_", env_nested_delimiter="__", frozen=True)

    queue_url: str
    token: SecretStr
    instance: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    comfyui_url: str = DEFAULT_COMFYUI_URL
    comfyui_dir: Path | None = None
    comfyui_port: int = Field(default=COMFYUI_PORT, ge=1, le=65535)
    cuda_device: int | None = Field(default=None, ge=0)
    extra_model_paths: Path | None = None
    comfyui_threads: int = Field(default=2, ge=1)
    comfyui_args: str = ""
    storage: StorageSettings
    provider: str = "unknown"
    hourly_eur: float | None = Field(default=None, ge=0)
    prefetch: bool = True
    previews: bool = False
    idle_exit_s: float = Field(default=0, ge=0)
    shutdown_grace_s: float = Field(default=90, ge=0)
    status_file: Path | None = None
    models_manifest: Path | None = None
    # Tuning; the defaults suit a workshop.
    lease_wait_s: float = Field(default=20, gt=0, description="long-poll wait per lease call")
    cancel_deadline_s: float = Field(default=15, gt=0, description="for ComfyUI to stop a job")
    quiet_after_s: float = Field(
        default=5, gt=0, description="WebSocket silence before the worker asks /history"
    )
    preview_interval_s: float = Field(default=0.5, ge=0, description="at most one per interval")
    log_level: str = "INFO"

    @field_validator("queue_url", "comfyui_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")

    @field_validator("token")
    @classmethod
    def _worker_token(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(WORKER_TOKEN_PREFIX):
            raise ValueError(f"a worker token starts with {WORKER_TOKEN_PREFIX!r}")
        return value

    @field_validator("comfyui_dir")
    @classmethod
    def _checkout(cls, value: Path | None) -> Path | None:
        if value is not None and not (value / "main.py").is_file():
            raise ValueError(f"{value} holds no main.py")
        return value

    @field_validator("extra_model_paths", "models_manifest")
    @classmethod
    def _existing_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} does not exist")
        return value

    @field_validator("comfyui_args")
    @classmethod
    def _shell_words(cls, value: str) -> str:
        shlex.split(value)  # unbalanced quotes raise ValueError here, not at ComfyUI's start
        return value

    @model_validator(mode="after")
    def _attach_or_manage(self) -> WorkerSettings:
        if self.comfyui_dir is not None and "comfyui_url" in self.model_fields_set:
            raise ValueError(
                "set WORKER_COMFYUI_URL (attach to a running ComfyUI) or WORKER_COMFYUI_DIR "
                "(start one on WORKER_COMFYUI_PORT), not both"
            )
        return self

    @property
    def managed(self) -> bool:
        return self.comfyui_dir is not None

    @property
    def comfyui_base_url(self) -> str:
        """Where ComfyUI answers: the attached URL, or loopback for a managed one."""
        return f"http://127.0.0.1:{self.comfyui_port}" if self.managed else self.comfyui_url

    def comfyui_argv(self) -> list[str]:
        """`main.py`'s arguments for a managed ComfyUI (loopback only)."""
        argv = ["main.py", "--listen", "127.0.0.1", "--port", str(self.comfyui_port),
                "--disable-auto-launch"]  # fmt: skip
        if self.cuda_device is not None:
            argv += ["--cuda-device", str(self.cuda_device)]
        if self.extra_model_paths is not None:
            argv += ["--extra-model-paths-config", str(self.extra_model_paths)]
        if self.previews:
            argv += ["--preview-method", "auto"]
        return argv + shlex.split(self.comfyui_args)


class SettingsError(Exception):
    """The environment does not describe a worker; the message says how to fix it."""


def explain(error: ValidationError) -> str:
    """One line per problem: the variable, what is wrong, what to set."""
    lines = ["the worker's settings are not valid:"]
    for problem in error.errors():
        loc = [str(part) for part in problem["loc"]]
        variable = "WORKER_" + "__".join(loc).upper() if loc else "WORKER_*"
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "missing":
            message = "not set"
        hint = HINTS.get(loc[0]) if loc else None
        lines.append(f"  {variable}: {message}" + (f"; set it to {hint}" if hint else ""))
    return "\n".join(lines)


def load_settings(**overrides: Any) -> WorkerSettings:
    """The settings from the environment (and `overrides`), or SettingsError saying why not."""
    try:
        return WorkerSettings(**overrides)
    except ValidationError as exc:
        raise SettingsError(explain(exc)) from None
