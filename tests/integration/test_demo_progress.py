"""The demo's progress monitor against the real database: it stops counting the
tenant's events only once all of them are stored, wherever they came in."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest import Caller, Outcome, ingest_events
from tests.integration.relay_support import until
from vigil.demo import Progress, _monitor, _wait_for_assessments
from vigil.processes import Processes


async def _store(uow_factory: Any, tenant: uuid.UUID, event: dict[str, Any]) -> None:
    caller = Caller(tenant, actor="demo", door="test", correlation_id=None)
    (result,) = await ingest_events(uow_factory, caller, [event])
    assert result.outcome is Outcome.ACCEPTED


async def _fail_all(owner_engine: AsyncEngine, tenant: uuid.UUID) -> None:
    """Settle every event of the tenant (as failed: what the wait counts is the same)."""
    async with owner_engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO scoring_failures (tenant_id, event_id, attempts, reason)"
                " SELECT tenant_id, event_id, 1, 'test' FROM events WHERE tenant_id = :t"
                " ON CONFLICT DO NOTHING"
            ),
            {"t": tenant},
        )


async def test_an_event_stored_after_the_last_batch_was_answered_is_still_counted(
    owner_engine: AsyncEngine,
    ingest_uow_factory: Any,
    tenant: uuid.UUID,
    transaction_event: Any,
    tmp_path: Path,
) -> None:
    # The demo sends its first transfers through the inbound queue, which stores them
    # when its consumer gets to them: possibly after every GraphQL batch was answered.
    # The wait for the assessments must see them stored, not stall on a count taken
    # before they were.
    progress = Progress()
    monitor = asyncio.create_task(
        _monitor(owner_engine, tenant, 2, progress, Processes(env={}, log_dir=tmp_path))
    )
    try:
        await _store(ingest_uow_factory, tenant, transaction_event())
        progress.expected = 2
        await until(lambda: progress.stored == 1)
        await asyncio.sleep(1)  # more looks after every batch was answered

        await _store(ingest_uow_factory, tenant, transaction_event())
        await _fail_all(owner_engine, tenant)
        async with asyncio.timeout(10):
            await _wait_for_assessments(progress, 2, monitor)
        assert (progress.stored, progress.failed) == (2, 2)
    finally:
        monitor.cancel()
        await asyncio.gather(monitor, return_exceptions=True)
