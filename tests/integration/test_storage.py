"""Ingestion against the real PostgreSQL: one transaction, idempotent, tenant-isolated,
with an append-only, verifiable audit trail."""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.audit_trail import verify
from adapters.database import make_engine
from adapters.ingest_store import ingest_unit_of_work_factory
from adapters.unit_of_work import unit_of_work_factory
from domain.errors import AuditChainBroken
from services.ingest import Caller, Outcome, ingest_events

TENANT_TABLES = ("tenants", "subjects", "events", "outbox", "inbox", "audit_records", "audit_heads")
ADMIN_URL = os.environ.get(
    "VIGIL_ADMIN_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(params=["ingest", "general"])
def uow_factory(request: pytest.FixtureRequest, app_engine: AsyncEngine) -> Any:
    """Ingest's guarantees hold through both units of work: the doors' own, on the
    driver, and the general one the other services use."""
    if request.param == "ingest":
        return ingest_unit_of_work_factory(app_engine)
    return unit_of_work_factory(app_engine)


async def _count(engine: AsyncEngine, sql: str, **params: Any) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(text(sql), params)).scalar_one())


async def test_an_event_is_stored_with_its_audit_record_and_outbox_row(
    uow_factory: Any, owner_engine: AsyncEngine, tenant: uuid.UUID, transaction_event: Any
) -> None:
    caller = Caller(tenant, "core-banking", "graphql", "corr-42")

    (result,) = await ingest_events(uow_factory, caller, [transaction_event("k-1")])

    assert result.outcome is Outcome.ACCEPTED
    async with owner_engine.connect() as connection:
        event = (
            await connection.execute(
                text("SELECT * FROM events WHERE tenant_id = :t"), {"t": tenant}
            )
        ).one()
        audit = (
            await connection.execute(
                text("SELECT * FROM audit_records WHERE tenant_id = :t AND seq = 2"), {"t": tenant}
            )
        ).one()
        message = (
            await connection.execute(
                text("SELECT * FROM outbox WHERE tenant_id = :t"), {"t": tenant}
            )
        ).one()
    assert event.event_id == result.event_id
    assert str(event.amount) == "125.5000"
    assert (audit.action, audit.actor, audit.entity_id) == (
        "event.accepted",
        "core-banking",
        str(result.event_id),
    )
    assert audit.details["payloadHash"] == bytes(event.payload_hash).hex()
    assert message.envelope["type"] == "event.received"
    assert message.envelope["tenantid"] == str(tenant)
    assert message.envelope["correlationid"] == "corr-42"
    assert message.envelope["data"]["eventId"] == str(result.event_id)
    assert message.ordering_key == event.subject_id
    async with owner_engine.connect() as connection:
        assert await verify(connection, tenant) == 2


async def test_fifty_concurrent_ingests_of_one_key_make_one_event(
    uow_factory: Any, owner_engine: AsyncEngine, tenant: uuid.UUID, transaction_event: Any
) -> None:
    caller = Caller(tenant, "core-banking", "graphql")
    event = transaction_event("same-key")

    answers = await asyncio.gather(
        *(ingest_events(uow_factory, caller, [event]) for _ in range(50))
    )

    outcomes = [answer[0].outcome for answer in answers]
    assert outcomes.count(Outcome.ACCEPTED) == 1
    assert outcomes.count(Outcome.DUPLICATE) == 49
    assert len({answer[0].event_id for answer in answers}) == 1
    subjects_before = await _count(
        owner_engine, "SELECT count(*) FROM subjects WHERE tenant_id = :t", t=tenant
    )

    conflicting = transaction_event("same-key", amount="9.99", beneficiary="NEWACCOUNT1")
    (refused,) = await ingest_events(uow_factory, caller, [conflicting])

    assert refused.outcome is Outcome.REJECTED
    assert refused.rejection is not None
    assert refused.rejection.code == "IDEMPOTENCY_CONFLICT"
    for table, expected in (("events", 1), ("outbox", 1), ("audit_records", 2)):
        count = await _count(
            owner_engine, f"SELECT count(*) FROM {table} WHERE tenant_id = :t", t=tenant
        )
        assert count == expected, table
    assert (
        await _count(owner_engine, "SELECT count(*) FROM subjects WHERE tenant_id = :t", t=tenant)
        == subjects_before
    )


async def test_concurrent_batches_keep_the_audit_chain_whole(
    uow_factory: Any, owner_engine: AsyncEngine, tenant: uuid.UUID, transaction_event: Any
) -> None:
    caller = Caller(tenant, "core-banking", "graphql")
    batches = [
        [transaction_event(originator=f"ACC{(b * 7 + i) % 13}") for i in range(20)]
        for b in range(10)
    ]

    await asyncio.gather(*(ingest_events(uow_factory, caller, batch) for batch in batches))

    async with owner_engine.connect() as connection:
        assert await verify(connection, tenant) == 1 + 200


async def test_the_app_role_without_a_tenant_sees_and_changes_nothing(
    app_engine: AsyncEngine, uow_factory: Any, tenant: uuid.UUID, transaction_event: Any
) -> None:
    await ingest_events(uow_factory, Caller(tenant, "x", "graphql"), [transaction_event()])

    async with app_engine.connect() as connection:
        for table in TENANT_TABLES:
            seen = (await connection.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
            assert seen == 0, table
        result = await connection.execute(text("UPDATE subjects SET attributes = '{}'"))
        assert result.rowcount == 0
        with pytest.raises(DBAPIError, match="no tenant is set"):
            await connection.execute(
                text(
                    "SELECT vigil_append_audit(ARRAY[gen_random_uuid()], ARRAY['x'], ARRAY['x'],"
                    " ARRAY['x'], ARRAY['x'], ARRAY[NULL], ARRAY['{}'::jsonb])"
                )
            )
        await connection.rollback()


async def test_one_tenant_never_sees_another(
    app_engine: AsyncEngine,
    owner_engine: AsyncEngine,
    uow_factory: Any,
    tenant: uuid.UUID,
    transaction_event: Any,
) -> None:
    await ingest_events(uow_factory, Caller(tenant, "x", "graphql"), [transaction_event()])
    other = uuid.uuid4()

    async with app_engine.connect() as connection:
        await connection.execute(
            text("SELECT set_config('vigil.tenant_id', :t, true)"), {"t": str(other)}
        )
        for table in TENANT_TABLES:
            seen = (await connection.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
            assert seen == 0, table
        with pytest.raises(DBAPIError, match="row-level security"):
            await connection.execute(
                text("INSERT INTO inbox (tenant_id, consumer, message_id) VALUES (:t, 'c', 'm')"),
                {"t": tenant},
            )
        await connection.rollback()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_records SET actor = 'mallory'",
        "DELETE FROM audit_records",
        "TRUNCATE audit_records",
    ],
)
async def test_audit_records_cannot_be_changed_by_the_app_role(
    app_engine: AsyncEngine, tenant: uuid.UUID, statement: str
) -> None:
    async with app_engine.connect() as connection:
        await connection.execute(
            text("SELECT set_config('vigil.tenant_id', :t, true)"), {"t": str(tenant)}
        )
        with pytest.raises(DBAPIError, match="permission denied"):
            await connection.execute(text(statement))
        await connection.rollback()


@pytest.mark.parametrize(
    "statement", ["UPDATE audit_records SET actor = 'mallory'", "DELETE FROM audit_records"]
)
async def test_audit_records_cannot_be_changed_even_by_the_owner(
    owner_engine: AsyncEngine, tenant: uuid.UUID, statement: str
) -> None:
    async with owner_engine.connect() as connection:
        with pytest.raises(DBAPIError, match="append-only"):
            await connection.execute(text(f"{statement} WHERE tenant_id = :t"), {"t": tenant})
        await connection.rollback()


async def test_the_relay_role_reads_only_the_outbox(relay_engine: AsyncEngine) -> None:
    async with relay_engine.connect() as connection:
        for table in ("events", "subjects", "audit_records", "tenants"):
            with pytest.raises(DBAPIError, match="permission denied"):
                await connection.execute(text(f"SELECT 1 FROM {table} LIMIT 1"))
            await connection.rollback()


async def test_a_record_changed_behind_the_triggers_is_detected(
    uow_factory: Any, owner_engine: AsyncEngine, tenant: uuid.UUID, transaction_event: Any
) -> None:
    await ingest_events(
        uow_factory, Caller(tenant, "x", "graphql"), [transaction_event() for _ in range(3)]
    )
    database = owner_engine.url.database
    superuser = make_engine(ADMIN_URL.rsplit("/", 1)[0] + f"/{database}", pool_size=1)
    try:
        async with superuser.begin() as connection:
            # Only a superuser can switch triggers off, as an attacker with full access would.
            await connection.execute(text("SET LOCAL session_replication_role = replica"))
            await connection.execute(
                text("UPDATE audit_records SET actor = 'mallory' WHERE tenant_id = :t AND seq = 3"),
                {"t": tenant},
            )
    finally:
        await superuser.dispose()

    async with owner_engine.connect() as connection:
        with pytest.raises(AuditChainBroken) as raised:
            await verify(connection, tenant)
    assert raised.value.seq == 3


async def test_a_chain_cut_short_at_its_end_is_detected(
    uow_factory: Any, owner_engine: AsyncEngine, tenant: uuid.UUID, transaction_event: Any
) -> None:
    await ingest_events(
        uow_factory, Caller(tenant, "x", "graphql"), [transaction_event() for _ in range(3)]
    )
    database = owner_engine.url.database
    superuser = make_engine(ADMIN_URL.rsplit("/", 1)[0] + f"/{database}", pool_size=1)
    try:
        async with superuser.begin() as connection:
            await connection.execute(text("SET LOCAL session_replication_role = replica"))
            await connection.execute(
                text("DELETE FROM audit_records WHERE tenant_id = :t AND seq = 4"), {"t": tenant}
            )
    finally:
        await superuser.dispose()

    async with owner_engine.connect() as connection:
        with pytest.raises(AuditChainBroken, match="where its head says"):
            await verify(connection, tenant)
