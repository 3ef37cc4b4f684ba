"""The queue API's request and response shapes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.contracts import (
    COMFY_JOB_MESSAGES,
    JOB_ID_PATTERN,
    MAX_DAILY_LIMIT,
    MAX_RUNNING_LIMIT,
    JobState,
    Mode,
    Role,
)


class Job(BaseModel):
    """A job as its owner (or an admin) sees it. Times are Unix milliseconds."""

    id: str
    user: str
    state: JobState
    number: int | None = Field(
        default=None, description="submit sequence: ComfyUI's `number` of the prompt"
    )
    priority: int = Field(description="scheduling level: 0 participant, 1 instructor, 2 admin")
    attempt: int
    queued_at: int
    leased_at: int | None = None
    started_at: int | None = None
    finished_at: int | None = None
    worker: str | None = None
    error: dict[str, Any] | None = Field(
        default=None, description="ComfyUI's own error shape, as the worker reported it"
    )
    outputs: dict[str, Any] | None = Field(
        default=None, description="ComfyUI outputs by node id, with stored file keys"
    )
    progress: dict[str, Any] | None = None
    cancel_requested: bool = False
    position: int | None = Field(default=None, description="1-based estimate while queued")
    client_id: str | None = None
    gpu_ms: int | None = Field(
        default=None, description="ComfyUI's execution_start to its end, as the worker measured"
    )
    history: dict[str, Any] | None = Field(
        default=None, description="ComfyUI's history entry (status, meta) without prompt/outputs"
    )


class JobWithWorkflow(Job):
    workflow: dict[str, Any] | None = None
    extra_data: dict[str, Any] | None = None


class SubmitRequest(BaseModel):
    """A ComfyUI API-format workflow: ``{node_id: {class_type, inputs}}``."""

    model_config = ConfigDict(extra="forbid")

    workflow: dict[str, Any]
    job_id: str | None = Field(
        default=None,
        pattern=JOB_ID_PATTERN,
        description="the job's id (ComfyUI's prompt id, which a client may choose); "
        "default: a fresh 32-hex id. 409 if the queue still holds a job with it",
    )
    user: str | None = Field(default=None, description="admins only: submit for this user")
    client_id: str | None = Field(default=None, max_length=128)
    extra_data: dict[str, Any] | None = None
    front: bool = Field(
        default=False,
        description="admins and instructors only: queue it before every other queued job",
    )


class LeasedJob(BaseModel):
    """What a worker receives when it leases a job."""

    job: Job
    lease_id: str
    lease_ttl_s: float
    workflow: dict[str, Any]
    extra_data: dict[str, Any] | None = Field(
        default=None, description="as submitted, e.g. extra_pnginfo for the saved PNGs"
    )


class LeaseResponse(BaseModel):
    lease: LeasedJob | None = None
    cancel: list[str] = Field(
        default_factory=list, description="jobs this worker holds whose owner cancelled them"
    )
    drain: bool | None = Field(
        default=None,
        description="true (and only then present) while an admin drains this worker: finish "
        "the jobs held, lease nothing new",
    )


#: A sha256 digest in hex: how catalogues are named.
SHA256_HEX = r"^[0-9a-f]{64}$"


class ComfyInfo(BaseModel):
    """The ComfyUI a worker drives."""

    version: str | None = Field(default=None, max_length=64)
    url: str | None = Field(default=None, max_length=256)
    up: bool = False


class WorkerRegistration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instance: str | None = Field(
        default=None,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="distinguishes several workers sharing one host's token (e.g. 'gpu0-2')",
    )
    provider: str = Field(default="unknown", max_length=64)
    gpu: str = Field(default="unknown", max_length=128)
    vram_total_mb: int | None = Field(default=None, ge=0)
    models: dict[str, list[str]] = Field(
        default_factory=dict, max_length=100, description="model files on disk, by folder"
    )
    hourly_eur: float | None = Field(default=None, ge=0)
    catalog_hash: str | None = Field(
        default=None,
        pattern=SHA256_HEX,
        description="sha256 of the exact /object_info bytes of its ComfyUI",
    )
    comfyui: ComfyInfo | None = None
    system_stats: dict[str, Any] | None = Field(
        default=None, description="its ComfyUI's /system_stats, as is"
    )
    capabilities: dict[str, Any] = Field(default_factory=dict)


class WorkerRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    worker_id: str


class Finished(BaseModel):
    """A job the worker finished, reported together with its next lease request."""

    model_config = ConfigDict(extra="forbid")

    job_id: str
    lease_id: str
    outputs: dict[str, Any] = Field(default_factory=dict)
    gpu_ms: int | None = Field(default=None, ge=0)
    history: dict[str, Any] | None = None


class LeaseRequest(WorkerRef):
    wait_s: float = Field(default=20.0, ge=0)
    prefetch: bool = Field(
        default=False,
        description="I am busy: lease me a job to queue behind my running one, but only if no "
        "other worker is idle and waiting",
    )
    complete: Finished | None = Field(
        default=None,
        description="record this job's success first (as /jobs/{id}/complete would), then "
        "lease the next: one round trip between jobs instead of two",
    )


class LeaseRef(WorkerRef):
    lease_id: str


class HeldLease(BaseModel):
    job_id: str
    lease_id: str


class WorkerStatus(BaseModel):
    """A worker's health line, for the admin view (and, as a file, the host's watchdog)."""

    model_config = ConfigDict(extra="allow")

    state: Literal["idle", "busy", "draining", "starting"]
    job: str | None = None
    comfyui: Literal["up", "down"]
    jobs_done: int = Field(default=0, ge=0)


class HeartbeatRequest(WorkerRef):
    leases: list[HeldLease] = Field(default_factory=list, max_length=64)
    status: WorkerStatus | None = None
    wait_s: float = Field(
        default=0, ge=0, le=30,
        description="if no held job is newly cancelled and no listed lease lost, answer when "
        "a held job is cancelled, or after wait_s: a busy worker hears of a cancel at once",
    )
    cancelling: list[str] = Field(
        default_factory=list, max_length=64,
        description="jobs whose cancel this worker already acts on: no reason to answer early",
    )


class HeartbeatResponse(BaseModel):
    cancel: list[str] = Field(description="jobs to interrupt: their owner cancelled them")
    lost: list[str] = Field(description="jobs whose lease this worker no longer holds")
    drain: bool | None = Field(
        default=None,
        description="true (and only then present) while an admin drains this worker: finish "
        "the jobs held, lease nothing new",
    )


class ProgressRequest(LeaseRef):
    value: float = 0
    max: float = 0
    node: str | None = None
    data: dict[str, Any] | None = None


class CancelFlag(BaseModel):
    cancel: bool


class CompleteRequest(LeaseRef):
    outputs: dict[str, Any] = Field(default_factory=dict)
    gpu_ms: int | None = Field(default=None, ge=0)
    history: dict[str, Any] | None = Field(
        default=None, description="ComfyUI's history entry without prompt and outputs"
    )


class FailRequest(LeaseRef):
    error: dict[str, Any]
    retry: bool = Field(default=False, description="true for host trouble, not graph errors")
    gpu_ms: int | None = Field(default=None, ge=0)
    history: dict[str, Any] | None = None


class ComfyMessage(BaseModel):
    """One ComfyUI WebSocket message about a job, in ComfyUI's own shape."""

    type: Literal[(*COMFY_JOB_MESSAGES, "preview")]  # type: ignore[valid-type]
    data: dict[str, Any]


class RelayRequest(LeaseRef):
    messages: list[ComfyMessage] = Field(max_length=1000)


class DeclineRequest(LeaseRef):
    error: dict[str, Any] = Field(
        description="ComfyUI's error for this graph on this worker (its /prompt 400 body)"
    )


class StateResponse(BaseModel):
    state: str


class WorkerInfo(BaseModel):
    id: str
    state: str
    last_seen: int
    registered_at: int | None
    info: dict[str, Any]
    jobs: list[str]
    status: dict[str, Any] | None = Field(
        default=None, description="its last heartbeat's status line"
    )
    draining: bool = Field(
        default=False, description="drained by an admin: it leases nothing new"
    )


class ModeBody(BaseModel):
    mode: Mode


class UserBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: str = Field(min_length=8, max_length=256)
    role: Role = Role.PARTICIPANT


class UserLimits(BaseModel):
    """An admin's limits for one user; None: the queue's default (running), none (daily)."""

    model_config = ConfigDict(extra="forbid")

    running: int | None = Field(
        default=None, ge=1, le=MAX_RUNNING_LIMIT, description="jobs running at once"
    )
    daily: int | None = Field(
        default=None, ge=0, le=MAX_DAILY_LIMIT, description="jobs submitted per UTC day"
    )


class UserUsage(BaseModel):
    jobs_today: int = Field(description="jobs submitted today (UTC)")
    jobs: int = Field(description="jobs submitted in all")
    gpu_s: float = Field(description="GPU seconds of their ended jobs, as workers measured")


class UserOut(BaseModel):
    id: str
    role: Role
    disabled: bool = False
    limits: UserLimits | None = None
    usage: UserUsage | None = None


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64)
    role: Role = Role.PARTICIPANT
    password: str | None = Field(
        default=None, min_length=8, max_length=256, description="null: generate one"
    )


class NewPassword(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: str | None = Field(
        default=None, min_length=8, max_length=256, description="null: generate one"
    )


class CreatedUser(BaseModel):
    id: str
    role: Role
    password: str = Field(description="shown once; the queue keeps only its hash")


class PushWorkflow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workflow: dict[str, Any] = Field(
        description="a workflow as ComfyUI saves it (UI format: nodes and links) or in the "
        "API format (node id -> class_type and inputs)"
    )
    user: str | None = Field(default=None, max_length=64, description="null: every participant")


class PushedTo(BaseModel):
    sent_to: str = Field(description="the participant, or * for every one")


class CredentialsSheetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    users: list[str] | None = Field(
        default=None, max_length=1000, description="null: every participant"
    )
    reset: bool = Field(
        default=False, description="give every listed user without a passed password a new one"
    )
    passwords: dict[str, str] | None = Field(
        default=None, max_length=1000,
        description="the passwords the organizer holds (user -> password); each is checked",
    )


class PasswordOut(BaseModel):
    id: str
    password: str = Field(description="shown once; the queue keeps only its hash")


class TokenRequest(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=256)


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 scheme name
    expires_in: int
    role: Role


class WorkerTokenRequest(BaseModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")


class WorkerTokenResponse(BaseModel):
    name: str
    token: str = Field(description="shown once; the service keeps only its SHA-256")


class Pool(BaseModel):
    """The GPU pool in aggregate, for every person: ComfyUI's /system_stats and the gateway's
    queue display are built from it. Nothing here names a host, a path or another user."""

    workers_alive: int
    devices: list[dict[str, Any]] = Field(description="the live workers' ComfyUI devices")
    comfyui_version: str | None = None
    required_frontend_version: str | None = None
    mean_run_s: float | None = Field(
        default=None, description="mean run time of recently succeeded jobs, seconds"
    )
    queued_total: int = Field(description="jobs waiting in the shared queue, everyone's")
    models: dict[str, list[str]] = Field(
        default_factory=dict, description="model files of the live workers, by folder"
    )


class Deleted(BaseModel):
    deleted: int


# -- the cockpit's numbers (GET /api/admin/stats, /cost, /eta) ---------------------------------
class ThroughputPoint(BaseModel):
    t: int = Field(description="the minute's start, Unix ms")
    done: int = Field(description="jobs that succeeded in that minute")
    failed: int = Field(description="jobs that failed in that minute")


class WaitPoint(BaseModel):
    t: int = Field(description="the minute's start, Unix ms")
    p50: float | None = Field(description="median queue wait (s) of the jobs first leased then")
    max: float | None = Field(description="longest queue wait (s) of those jobs")


class JobsUsage(BaseModel):
    jobs: int = Field(description="jobs submitted in all")
    gpu_s: float = Field(description="GPU seconds of their ended jobs, as workers measured")


class Stats(BaseModel):
    window_s: int
    throughput: list[ThroughputPoint] = Field(description="per minute, oldest first")
    wait_s: list[WaitPoint] = Field(description="per minute, oldest first")
    usage: dict[str, JobsUsage] = Field(description="per user, since the queue's start")


class WorkerCost(BaseModel):
    id: str
    hourly_eur: float | None = Field(description="its price, as it registered (None: unknown)")
    connected_s: float = Field(description="connected today (UTC): registration to last "
                               "heartbeat, or to now while alive, summed over registrations")
    eur: float


class Cost(BaseModel):
    total_eur: float = Field(description="the day's cost so far (UTC day)")
    per_hour_eur: float = Field(description="what the workers alive now cost per hour")
    workers: list[WorkerCost]


class Eta(BaseModel):
    backlog: int = Field(description="queued jobs")
    job_s: float | None = Field(description="median GPU seconds of recent jobs (None: none yet)")
    workers: int = Field(description="workers that may lease: alive, not draining")
    clears_in_s: float | None = Field(description="an estimate; None without workers or job_s")
    clears_in_s_with_one_more: float | None
