"""Everything a request handler needs, built once at startup and shared by all requests."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.queue.auth import Authenticator
from services.queue.catalog import PoolCatalog
from services.queue.events import EventHub
from services.queue.metrics import QueueMetrics
from services.queue.settings import QueueSettings
from services.queue.store import JobStore


@dataclass(frozen=True)
class QueueContext:
    settings: QueueSettings
    store: JobStore
    auth: Authenticator
    hub: EventHub
    metrics: QueueMetrics
    pool_catalog: PoolCatalog = field(default_factory=PoolCatalog)
