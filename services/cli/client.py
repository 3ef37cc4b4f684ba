"""The queue's admin API over HTTP, with its failures turned into what an organizer can act
on: each carries the message to print and the exit status (see `ExitCode`)."""

from __future__ import annotations

import enum
from typing import Any

import httpx

TIMEOUT_S = 30.0
#: FastAPI's answer for a route it does not have (a queue older than this CLI), as opposed
#: to a route's own 404 with its reason ("no job 'x'").
_NO_ROUTE = {"Not Found", "Method Not Allowed"}


class ExitCode(enum.IntEnum):
    OK = 0
    FAILED = 1  # the queue refused (its reason), or a local file was wrong
    UNREACHABLE = 2
    REFUSED_LOGIN = 3
    UNKNOWN = 4  # no such participant, job or worker (the queue's reason)
    USAGE = 64  # a mistyped command line (EX_USAGE: 2 already means "unreachable")


class CliError(Exception):
    def __init__(self, message: str, code: ExitCode = ExitCode.FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class AdminClient:
    """Signs in once (POST /api/auth/token) and sends the bearer token with each call."""

    def __init__(self, url: str, user: str, password: str, timeout_s: float = TIMEOUT_S):
        self.url = url
        self.user = user
        self._password = password
        self._timeout_s = timeout_s
        self._http = httpx.Client(base_url=url, timeout=timeout_s)
        self._token: str | None = None

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *_: object) -> None:
        self._http.close()

    def login(self) -> None:
        r = self._send("POST", "/api/auth/token", json={
            "username": self.user, "password": self._password,
        })
        if r.status_code == 401:
            raise CliError(
                f"the admin password was refused by the queue at {self.url} "
                f"(user {self.user!r}): {_detail(r)}",
                ExitCode.REFUSED_LOGIN,
            )
        if r.status_code in (403, 429):
            raise CliError(
                f"the queue at {self.url} refused the sign-in of {self.user!r}: {_detail(r)}",
                ExitCode.REFUSED_LOGIN,
            )
        body = _json(r)
        if r.status_code != 200 or not isinstance(body, dict) or "access_token" not in body:
            raise CliError(
                f"cannot reach the queue at {self.url}: POST /api/auth/token answered "
                f"HTTP {r.status_code}, not the queue's sign-in (is the URL right?)",
                ExitCode.UNREACHABLE,
            )
        if body.get("role") != "admin":
            raise CliError(
                f"{self.user!r} signed in as {body.get('role')}, not as an admin: the cockpit "
                "needs the admin account",
                ExitCode.REFUSED_LOGIN,
            )
        self._token = body["access_token"]

    def call(self, method: str, path: str, json: Any = None,
             timeout_s: float | None = None) -> httpx.Response:
        """One admin call (`timeout_s` for the slow ones, like a sheet for 200 people); a
        non-2xx answer raises with the queue's reason."""
        if self._token is None:
            self.login()
        r = self._send(
            method, path, json=json, headers={"Authorization": f"Bearer {self._token}"},
            timeout=timeout_s if timeout_s is not None else self._timeout_s,
        )
        if r.is_success:
            return r
        detail = _detail(r)
        if r.status_code in (404, 405) and detail in _NO_ROUTE:
            raise CliError(
                f"the queue at {self.url} does not offer this yet ({method} {path} is not "
                "one of its routes): update the queue service",
            )
        if r.status_code == 404:
            raise CliError(detail, ExitCode.UNKNOWN)
        if r.status_code in (401, 403):
            raise CliError(f"the queue refused the admin's token: {detail}",
                           ExitCode.REFUSED_LOGIN)
        raise CliError(f"the queue refused: {detail} (HTTP {r.status_code})")

    def get(self, path: str) -> Any:
        return _json(self.call("GET", path))

    def post(self, path: str, body: Any = None) -> Any:
        return _json(self.call("POST", path, json=body))

    def put(self, path: str, body: Any) -> Any:
        return _json(self.call("PUT", path, json=body))

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise CliError(
                f"cannot reach the queue at {self.url}: no answer within "
                f"{kwargs.get('timeout', self._timeout_s)} s ({type(exc).__name__})",
                ExitCode.UNREACHABLE,
            ) from exc
        except (httpx.TransportError, httpx.InvalidURL, ValueError) as exc:
            raise CliError(
                f"cannot reach the queue at {self.url}: {exc or type(exc).__name__}",
                ExitCode.UNREACHABLE,
            ) from exc


def _json(r: httpx.Response) -> Any:
    if r.status_code == 204 or not r.content:
        return None
    if "json" not in r.headers.get("content-type", ""):
        return r.text
    try:
        return r.json()
    except ValueError:
        return r.text


def _detail(r: httpx.Response) -> str:
    """The queue's one error shape, {"detail": "..."}; anything else shown as it came."""
    try:
        body = r.json()
    except ValueError:
        return r.text.strip()[:300] or f"HTTP {r.status_code}"
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return body["detail"]
    return str(body)[:300]
