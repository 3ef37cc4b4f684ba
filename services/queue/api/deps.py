"""Shared request dependencies: the app's store, settings and metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.queue.auth import Authenticator
from services.queue.events import EventHub
from services.queue.metrics import QueueMetrics
from services.queue.settings import QueueSettings
from services.queue.store import JobStore


async def _store(request: Request) -> JobStore:
    return request.app.state.store  # type: ignore[no-any-return]


async def _settings(request: Request) -> QueueSettings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def _metrics(request: Request) -> QueueMetrics:
    return request.app.state.metrics  # type: ignore[no-any-return]


async def _auth(request: Request) -> Authenticator:
    return request.app.state.auth  # type: ignore[no-any-return]


async def _hub(request: Request) -> EventHub:
    return request.app.state.hub  # type: ignore[no-any-return]


Store = Annotated[JobStore, Depends(_store)]
Settings = Annotated[QueueSettings, Depends(_settings)]
Metrics = Annotated[QueueMetrics, Depends(_metrics)]
Hub = Annotated[EventHub, Depends(_hub)]
Auth = Annotated[Authenticator, Depends(_auth)]
