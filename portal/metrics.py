"""``/metrics``: the process's Prometheus registry, with the outbox figures read fresh.

No token is asked: Prometheus scrapes without one. In production the endpoint is reached
on the internal network only; the load balancer does not route it. The outbox figures
come from ``vigil_outbox_stats()``, which counts across tenants without opening any row
to the application role.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from litestar import Request, Response, get
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import text

from adapters.metrics import (
    EVENTS_INGESTED,
    MULTIPROCESS_DIRECTORY,
    OUTBOX_OLDEST_AGE,
    OUTBOX_PARKED,
    OUTBOX_PENDING,
)
from portal.resources import PROBE_TIMEOUT_SECONDS, Resources, resources_of
from services.ingest import Outcome

log = logging.getLogger(__name__)

_OUTBOX_STATS = text("SELECT pending, parked, oldest_pending_seconds FROM vigil_outbox_stats()")


async def refresh_outbox_gauges(resources: Resources) -> None:
    async with asyncio.timeout(PROBE_TIMEOUT_SECONDS), resources.engine.connect() as connection:
        row = (await connection.execute(_OUTBOX_STATS)).one()
    OUTBOX_PENDING.set(row.pending)
    OUTBOX_PARKED.set(row.parked)
    OUTBOX_OLDEST_AGE.set(row.oldest_pending_seconds)


def start_ingest_counters(door: str) -> None:
    """Show a door's counters at zero from the start, so that rates are right from the
    first event on."""
    for outcome in Outcome:
        EVENTS_INGESTED.labels(door=door, outcome=outcome.value.lower())


@get("/metrics")
async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    try:
        await refresh_outbox_gauges(resources_of(request.app.state))
    except Exception as error:  # a scrape still serves the other metrics
        log.warning(
            "outbox figures not refreshed",
            extra={"error": f"{type(error).__name__}: {error}"[:300]},
        )
    return Response(generate_latest(_registry()), media_type=CONTENT_TYPE_LATEST)


def _registry() -> CollectorRegistry:
    """This process's registry, or, under several workers, all workers' samples."""
    directory = os.environ.get(MULTIPROCESS_DIRECTORY)
    if not directory:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]  # untyped upstream
    return registry
