"""The contracts between the parts, written once: every other module imports them from here.

Ports, token prefixes, job states, scheduling modes, roles, event types, the ComfyUI message
types the worker relays, and the object-storage key layout. Standard library only, so the
queue, the gateway, the worker, the CLI and the Pulumi program can all import it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

# -- ports ------------------------------------------------------------------------------------
#: The queue's HTTP port: behind Caddy on the VPS, and on the VPS's tailnet address for workers.
QUEUE_PORT = 8000
#: The participant gateway's HTTP port on the VPS's edge network (Caddy proxies to it).
GATEWAY_PORT = 8188
#: Where a worker looks for ComfyUI when told nothing else (ComfyUI's own default port).
COMFYUI_PORT = 8188
#: Redis' port: never published, never in a firewall or tailnet rule.
REDIS_PORT = 6379
#: Redis AOF fsync policy everywhere (local mode, the control plane): `always`, so a submit or
#: completion the client was told succeeded survives a host crash. Measured cost: see
#: docs/benchmarks.md, "Hardening".
REDIS_APPENDFSYNC = "always"

# -- tokens -----------------------------------------------------------------------------------
#: Worker tokens start with this; the queue tells them from session tokens by it.
WORKER_TOKEN_PREFIX = "cqw_"  # noqa: S105 (a prefix, not a secret)


# -- jobs -------------------------------------------------------------------------------------
class JobState(StrEnum):
    """A job's state; see docs/architecture.md for the transitions."""

    QUEUED = "queued"
    LEASED = "leased"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: States in which a job still holds a place in the queue or on a worker.
LIVE_STATES = (JobState.QUEUED, JobState.LEASED, JobState.RUNNING)

#: A job id a client may choose (ComfyUI's `prompt_id`; a UUID matches): it goes into Redis
#: keys, object keys and URLs.
JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"

#: Event `user` of events addressed to every participant (an admin's pushed workflow).
EVERYONE = "*"


class Mode(StrEnum):
    """How the next job is chosen."""

    FIFO = "fifo"
    FAIR = "fair"
    PRIORITY = "priority"


class Role(StrEnum):
    PARTICIPANT = "participant"
    INSTRUCTOR = "instructor"
    ADMIN = "admin"


#: Scheduling level of each role; `priority` mode serves higher levels first.
ROLE_LEVEL: dict[Role, int] = {Role.PARTICIPANT: 0, Role.INSTRUCTOR: 1, Role.ADMIN: 2}


# -- participants -----------------------------------------------------------------------------
#: A user id, which is also its URL path segment (`/<id>/`): 1-64 ASCII letters, digits, '-',
#: '_' or '.'. The route plan matches participants by this pattern, not by a list, so a
#: participant the organizer adds at runtime is routed without a redeploy.
USER_ID_SEGMENT = r"[A-Za-z0-9._-]{1,64}"
USER_ID_RE = re.compile(USER_ID_SEGMENT)


def participant_name(n: int) -> str:
    """The name (and URL path segment) of participant number `n`, 1-based."""
    return f"user{n:03d}"


# -- events -----------------------------------------------------------------------------------
class EventType(StrEnum):
    """Types of the queue's event stream (`/api/events`)."""

    QUEUED = "queued"
    LEASED = "leased"
    RUNNING = "running"
    PROGRESS = "progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    CANCEL_REQUESTED = "cancel_requested"
    REQUEUED = "requeued"
    MODE = "mode"
    #: A ComfyUI message about a job, relayed by its worker: data = {"type", "data", "client_id"}.
    COMFY = "comfy"
    #: A worker lacked a model or node the job needs; the job is queued again for the others.
    DECLINED = "declined"
    #: Internal, never delivered to subscribers: a user's sessions changed (deleted, role or
    #: password changed, disabled); every replica drops what it cached about them.
    SESSION = "session"
    #: The queue was paused or resumed by an admin (state `paused`/`resumed`, data
    #: {"paused": bool}); wakes every long-polling worker on resume.
    QUEUE = "queue"
    #: An admin put a queued job at the front of the queue (state `queued`).
    BUMPED = "bumped"
    #: An admin drained a worker or took it back (state `draining`/`undrained`, data
    #: {"worker": id, "draining": bool}); wakes every long-polling worker.
    WORKER = "worker"
    #: An admin set a user's limits (data {"user", "running", "daily"}); wakes every
    #: long-polling worker (a raised running limit may make jobs claimable).
    LIMITS = "limits"
    #: An admin pushed a workflow to participants' canvases: `user` is one participant or
    #: `*` (EVERYONE), data {"workflow": {...}}; the gateway sends it as workshop.push_workflow.
    PUSH_WORKFLOW = "push_workflow"


# -- the cockpit's limits -----------------------------------------------------------------------
#: Largest workflow an admin may push to canvases (its JSON text): it travels in one event.
PUSH_WORKFLOW_MAX_BYTES = 1024 * 1024
#: Bounds of an admin's per-user limits (running jobs at once; jobs submitted per UTC day).
MAX_RUNNING_LIMIT = 100
MAX_DAILY_LIMIT = 100_000
#: The statistics' window and resolution: per minute over the last hour.
STATS_WINDOW_S = 3600
STATS_BUCKET_S = 60


#: The ComfyUI WebSocket message types a worker relays for a job, in ComfyUI's own shapes.
COMFY_JOB_MESSAGES = (
    "execution_start",
    "execution_cached",
    "executing",
    "progress",
    "progress_state",
    "executed",
    "execution_success",
    "execution_error",
    "execution_interrupted",
)


# -- object storage ---------------------------------------------------------------------------
class FileType(StrEnum):
    """ComfyUI's file types (the `type` of /view and of every output entry)."""

    INPUT = "input"
    OUTPUT = "output"
    TEMP = "temp"


_MAX_PATH = 512


def safe_relpath(path: str, what: str = "path") -> str:
    """A relative path made of plain components ('' is allowed: no subfolder), or ValueError.

    Every object key is built from such parts, so no input can climb out of its prefix."""
    if path == "":
        return path
    if len(path) > _MAX_PATH or "\\" in path or "\0" in path or path.startswith("/"):
        raise ValueError(f"invalid {what} {path!r}")
    for part in path.split("/"):
        if part in ("", ".", "..") or part != part.strip():
            raise ValueError(f"invalid {what} {path!r}")
    return path


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def user_prefix(user: str) -> str:
    """Everything of one participant lives under this prefix."""
    return f"users/{safe_relpath(user, 'user')}/"


def input_key(user: str, subfolder: str, filename: str) -> str:
    """An uploaded file (ComfyUI type `input`): `users/<user>/input/[<subfolder>/]<filename>`."""
    return user_prefix(user) + _join(
        FileType.INPUT, safe_relpath(subfolder, "subfolder"), safe_relpath(filename, "filename")
    )


def job_file_key(user: str, job_id: str, file_type: FileType, subfolder: str, filename: str) -> str:
    """A file a job wrote (type `output` or `temp`):
    `users/<user>/<type>/<job id>/[<subfolder>/]<filename>`.

    Keyed by job, so two jobs (or two workers' ComfyUIs) writing the same name never collide."""
    if file_type is FileType.INPUT:
        raise ValueError("inputs are keyed by input_key")
    return user_prefix(user) + _join(
        file_type,
        safe_relpath(job_id, "job id"),
        safe_relpath(subfolder, "subfolder"),
        safe_relpath(filename, "filename"),
    )


def participant_subfolder(job_id: str, subfolder: str) -> str:
    """The `subfolder` a participant sees for a job's file: `<job id>[/<subfolder>]`, so that
    /view?filename=&subfolder=&type= maps straight back to `job_file_key`."""
    return _join(safe_relpath(job_id, "job id"), safe_relpath(subfolder, "subfolder"))


def view_key(user: str, file_type: FileType, subfolder: str, filename: str) -> str:
    """The object behind a participant's /view request (inverse of `participant_subfolder`)."""
    if file_type is FileType.INPUT:
        return input_key(user, subfolder, filename)
    job_id, _, rest = safe_relpath(subfolder, "subfolder").partition("/")
    if not job_id:
        raise ValueError("output and temp files live in a job's subfolder")
    return job_file_key(user, job_id, file_type, rest, filename)


def userdata_key(user: str, path: str) -> str:
    """A participant's saved workflows and settings (ComfyUI's /userdata):
    `users/<user>/userdata/<path>`."""
    return user_prefix(user) + "userdata/" + safe_relpath(path, "userdata path")


# -- request routing --------------------------------------------------------------------------
# One public origin serves the queue, every participant's ComfyUI (through the gateway) and the
# ComfyUI frontend's absolute paths. This plan is the single statement of which path goes where:
# infra/proxy.py renders Caddy's config from it and local mode dispatches by `route_for`.


class Upstream(StrEnum):
    """Where a request goes."""

    QUEUE = "queue"
    GATEWAY = "gateway"
    #: `/<user id>` (no slash) is answered with a 308 to `/<user id>/`: without the slash the
    #: frontend derives an empty API base and calls the server root.
    REDIRECT = "redirect"


@dataclass(frozen=True)
class Route:
    """Paths and their destination. A path ending in `/*` matches that prefix (the slash
    included); any other path matches exactly. Matching ignores case, as Caddy's `path`
    matcher does.

    `regexp`, if given, is a regular expression the whole path must match (`re.fullmatch`),
    also ignoring case: infra/proxy.py renders it as Caddy's `path_regexp` with `^(?i)...$`.
    Write it in the syntax Python's `re` and Go's RE2 share (no lookarounds, no backrefs)."""

    paths: tuple[str, ...]
    upstream: Upstream
    regexp: str | None = None

    def matches(self, path: str) -> bool:
        if self.regexp is not None and re.fullmatch(self.regexp, path, re.IGNORECASE):
            return True
        path = path.lower()
        for pattern in self.paths:
            p = pattern.lower()
            if (p.endswith("/*") and path.startswith(p[:-1])) or path == p:
                return True
        return False


#: Paths the ComfyUI frontend (1.27) requests at the server root although the page lives under
#: /userNNN/ (see shared/comfyui/FRONTEND.md): the progress favicon, the mask editor's cursors,
#: node help, and two API calls. The two API paths must reach the gateway *before* the queue's
#: `/api/*` claims them.
FRONTEND_ROOT_API_PATHS = ("/api/view", "/api/experiment/*")
FRONTEND_ROOT_PATHS = ("/assets/*", "/cursor/*", "/docs/*")
#: What browsers ask every origin for by themselves. The frontend package has no favicon, so
#: the gateway answers 404, as ComfyUI does; routed here so it is not taken for a user id.
BROWSER_ROOT_PATHS = ("/favicon.ico",)
QUEUE_PATHS = ("/api/*",)
ADMIN_PATHS = ("/admin", "/admin/*")
#: What anything else gets (404).
NOT_ROUTED_MESSAGE = "Open the /userNNN/ link you were given."
#: A participant's own space, `/<id>` (redirected to `/<id>/`) and `/<id>/...`, by pattern.
USER_REDIRECT_RE = rf"/{USER_ID_SEGMENT}"
USER_SPACE_RE = rf"/{USER_ID_SEGMENT}/.*"
#: First path segments the plan gives to something other than a participant (lower case):
#: no user id may be one of them, in any case (Caddy's and `Route.matches`' matching ignore
#: case). Derived from the path constants above, so a new root path reserves its name.
RESERVED_SEGMENTS = frozenset(
    p.split("/")[1].lower()
    for p in (
        *FRONTEND_ROOT_API_PATHS, *QUEUE_PATHS, *ADMIN_PATHS, *FRONTEND_ROOT_PATHS,
        *BROWSER_ROOT_PATHS,
    )
)


def validate_user_id(uid: str) -> str:
    """`uid` if it may be a user id (it goes into Redis keys, object keys and URLs), else a
    ValueError saying why: 1-64 ASCII letters, digits, '-', '_' or '.', not only dots, and not
    a first path segment the route plan gives to others (RESERVED_SEGMENTS, in any case)."""
    if not USER_ID_RE.fullmatch(uid):
        raise ValueError(f"invalid user id {uid!r}: use 1-64 letters, digits, '-', '_' or '.'")
    if uid.strip(".") == "":
        raise ValueError(f"invalid user id {uid!r}: it must not be made only of dots")
    if uid.lower() in RESERVED_SEGMENTS:
        raise ValueError(
            f"invalid user id {uid!r}: /{uid.lower()}/ is reserved for the platform "
            f"(reserved: {', '.join(sorted(RESERVED_SEGMENTS))}, in any case)"
        )
    return uid


def route_plan() -> tuple[Route, ...]:
    """The routes in the order they are matched: the first route that matches wins.

    Participants are routed by pattern (any valid user id), after every fixed root path:
    `validate_user_id` keeps user ids off those names. A root name without its slash
    (`/api`, `/assets`) therefore takes the participants' redirect to `/api/`, `/assets/`."""
    return (
        Route(FRONTEND_ROOT_API_PATHS, Upstream.GATEWAY),
        Route(QUEUE_PATHS, Upstream.QUEUE),
        Route(ADMIN_PATHS, Upstream.QUEUE),
        Route((*FRONTEND_ROOT_PATHS, *BROWSER_ROOT_PATHS), Upstream.GATEWAY),
        Route((), Upstream.REDIRECT, regexp=USER_REDIRECT_RE),
        Route((), Upstream.GATEWAY, regexp=USER_SPACE_RE),
    )


def route_for(path: str, plan: Iterable[Route]) -> Route | None:
    """The route a request path takes, or None (answered 404 with NOT_ROUTED_MESSAGE)."""
    return next((r for r in plan if r.matches(path)), None)
