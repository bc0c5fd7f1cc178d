"""What scoring still owes: accepted events without an assessment, and events whose
scoring failed for good.

The reconciler reads across tenants through ``vigil_unassessed_events`` (a SECURITY
DEFINER function, the one thing ``vigil_app`` may read without a tenant); everything
else runs in a tenant's unit of work, under row-level security.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.database import translate_errors


@dataclass(frozen=True, slots=True)
class Unassessed:
    tenant_id: uuid.UUID
    event_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class ScoringFailure:
    event_id: uuid.UUID
    attempts: int
    reason: str
    failed_at: datetime


_ALL_TENANTS = text(
    "SELECT tenant_id, event_id FROM vigil_unassessed_events(:deadline, :lookback, :max_rows)"
)

# The same question for one tenant; an operator's one-shot pass uses it.
_ONE_TENANT = text(
    """
    SELECT e.event_id FROM events e
    WHERE e.tenant_id = :tenant
      AND e.received_at < now() - CAST(:deadline AS interval)
      AND e.received_at > now() - CAST(:lookback AS interval)
      AND NOT EXISTS (SELECT 1 FROM assessments a
                      WHERE a.tenant_id = e.tenant_id AND a.event_id = e.event_id)
      AND NOT EXISTS (SELECT 1 FROM scoring_failures f
                      WHERE f.tenant_id = e.tenant_id AND f.event_id = e.event_id)
    ORDER BY e.received_at
    LIMIT :max_rows
    """
)

_FAILURES = text(
    """
    SELECT event_id, attempts, reason, failed_at FROM scoring_failures
    WHERE tenant_id = :tenant ORDER BY failed_at, event_id LIMIT :max_rows
    """
)

_TAKE_FAILURES = text(
    """
    DELETE FROM scoring_failures
    WHERE tenant_id = :tenant AND event_id IN (
        SELECT event_id FROM scoring_failures
        WHERE tenant_id = :tenant
          AND (CAST(:event AS uuid) IS NULL OR event_id = CAST(:event AS uuid))
        ORDER BY failed_at, event_id LIMIT :max_rows FOR UPDATE)
    RETURNING event_id, attempts, reason, failed_at
    """
)


async def unassessed_events(
    engine: AsyncEngine, *, deadline: timedelta, lookback: timedelta, max_rows: int
) -> list[Unassessed]:
    """Events of every tenant accepted more than ``deadline`` ago (and less than
    ``lookback`` ago) that have neither an assessment nor a recorded failure."""
    with translate_errors():
        async with engine.connect() as connection:
            rows = await connection.execute(
                _ALL_TENANTS, {"deadline": deadline, "lookback": lookback, "max_rows": max_rows}
            )
            return [Unassessed(row.tenant_id, row.event_id) for row in rows]


async def unassessed_events_of(
    connection: AsyncConnection,
    tenant_id: uuid.UUID,
    *,
    deadline: timedelta,
    lookback: timedelta,
    max_rows: int,
) -> list[uuid.UUID]:
    parameters = {
        "tenant": tenant_id,
        "deadline": deadline,
        "lookback": lookback,
        "max_rows": max_rows,
    }
    with translate_errors():
        rows = await connection.execute(_ONE_TENANT, parameters)
    return [row.event_id for row in rows]


async def failures(
    connection: AsyncConnection, tenant_id: uuid.UUID, *, max_rows: int
) -> list[ScoringFailure]:
    with translate_errors():
        rows = await connection.execute(_FAILURES, {"tenant": tenant_id, "max_rows": max_rows})
    return [ScoringFailure(*row) for row in rows]


async def take_failures(
    connection: AsyncConnection,
    tenant_id: uuid.UUID,
    *,
    event_id: uuid.UUID | None,
    max_rows: int,
) -> list[ScoringFailure]:
    """Delete the tenant's recorded failures (or the one of ``event_id``) and return them;
    they are gone once the transaction commits."""
    parameters = {"tenant": tenant_id, "event": event_id, "max_rows": max_rows}
    with translate_errors():
        rows = await connection.execute(_TAKE_FAILURES, parameters)
    return sorted((ScoringFailure(*row) for row in rows), key=lambda f: f.failed_at)
