"""Ingest's own unit of work runs its transaction on the driver, outside SQLAlchemy's
bookkeeping: it must end that transaction on every path itself, and never hand the pool
a connection still in a transaction or still set to a tenant."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.database import make_engine
from adapters.ingest_store import IngestUnitOfWork, ingest_unit_of_work_factory
from adapters.settings import Settings
from domain.errors import TransientFailure, UnknownTenant
from domain.events import SubjectFacts, SubjectKind, SubjectRef
from services.ingest import Caller, Outcome, ingest_events
from tests.integration.test_storage import ADMIN_URL


@pytest.fixture
async def one_connection(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """The application role's engine with a single pooled connection, so that the
    connection a unit of work gave back is the one the next checkout gets."""
    engine = make_engine(settings.database_url, pool_size=1)
    engine.sync_engine.pool._max_overflow = 0
    try:
        yield engine
    finally:
        await engine.dispose()


async def _state(engine: AsyncEngine) -> tuple[bool, str | None]:
    """Whether the pooled connection is in a transaction, and its tenant setting."""
    async with engine.connect() as connection:
        raw = (await connection.get_raw_connection()).driver_connection
        assert isinstance(raw, asyncpg.Connection)
        in_transaction = raw.is_in_transaction()
        setting = await raw.fetchval("SELECT current_setting('vigil.tenant_id', true)")
        await raw.execute("ROLLBACK")
        return in_transaction, setting or None


async def _subjects(owner_engine: AsyncEngine, tenant: uuid.UUID) -> int:
    async with owner_engine.connect() as connection:
        return int(
            (
                await connection.execute(
                    text("SELECT count(*) FROM subjects WHERE tenant_id = :t"), {"t": tenant}
                )
            ).scalar_one()
        )


def _facts() -> list[SubjectFacts]:
    return [SubjectFacts(SubjectRef(SubjectKind.ACCOUNT, f"ACC-{uuid.uuid4().hex[:8]}"))]


async def test_a_unit_of_work_left_without_commit_rolls_back_and_gives_back_a_clean_connection(
    one_connection: AsyncEngine, owner_engine: AsyncEngine, tenant: uuid.UUID
) -> None:
    async def fail_after_a_write() -> None:
        async with IngestUnitOfWork(one_connection, tenant) as uow:
            await uow.subjects.upsert(_facts())
            raise RuntimeError("the caller failed")

    with pytest.raises(RuntimeError, match="the caller failed"):
        await fail_after_a_write()

    assert await _state(one_connection) == (False, None)
    assert await _subjects(owner_engine, tenant) == 0


async def test_after_a_commit_the_pooled_connection_carries_no_tenant(
    one_connection: AsyncEngine, owner_engine: AsyncEngine, tenant: uuid.UUID
) -> None:
    async with IngestUnitOfWork(one_connection, tenant) as uow:
        await uow.subjects.upsert(_facts())
        await uow.commit()

    assert await _state(one_connection) == (False, None)
    assert await _subjects(owner_engine, tenant) == 1


async def test_a_failed_statement_leaves_no_aborted_transaction_behind(
    one_connection: AsyncEngine, transaction_event: Any
) -> None:
    nobody = uuid.uuid4()
    with pytest.raises(UnknownTenant):
        await ingest_events(
            ingest_unit_of_work_factory(one_connection),
            Caller(nobody, "x", "graphql"),
            [transaction_event()],
        )

    assert await _state(one_connection) == (False, None)


async def test_a_tenant_id_that_is_not_a_uuid_never_reaches_the_database(
    one_connection: AsyncEngine,
) -> None:
    uow = IngestUnitOfWork(one_connection, "x', true); SELECT 1; --")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await uow.__aenter__()


async def test_a_connection_lost_mid_transaction_is_dropped_and_the_ingest_retried(
    one_connection: AsyncEngine,
    owner_engine: AsyncEngine,
    tenant: uuid.UUID,
    transaction_event: Any,
) -> None:
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        async with IngestUnitOfWork(one_connection, tenant) as uow:
            pid = await uow.events._connection.fetchval("SELECT pg_backend_pid()")
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
            with pytest.raises(TransientFailure):
                await uow.subjects.upsert(_facts())
    finally:
        await admin.close()

    # The dead connection was not given back: the next ingest gets a live one.
    (result,) = await ingest_events(
        ingest_unit_of_work_factory(one_connection),
        Caller(tenant, "x", "graphql"),
        [transaction_event()],
    )
    assert result.outcome is Outcome.ACCEPTED
    assert await _state(one_connection) == (False, None)


async def test_a_unit_of_work_cancelled_mid_statement_never_gives_back_a_busy_connection(
    one_connection: AsyncEngine, app_engine: AsyncEngine, tenant: uuid.UUID
) -> None:
    facts = _facts()
    async with IngestUnitOfWork(app_engine, tenant) as holder:
        # The subject's row stays locked until this transaction ends, so the second
        # upsert of it waits, in flight, until it is cancelled.
        await holder.subjects.upsert(facts)

        async def wait_on_the_row() -> None:
            async with IngestUnitOfWork(one_connection, tenant) as waiter:
                await waiter.subjects.upsert(facts)

        waiting = asyncio.create_task(wait_on_the_row())
        await asyncio.sleep(0.5)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    assert await _state(one_connection) == (False, None)
