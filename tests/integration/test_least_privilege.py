"""What each database role can do beyond its job: nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest import Caller, ingest_events

SET_TENANT = text("SELECT set_config('vigil.tenant_id', :t, true)")


async def _one_event(uow_factory: Any, tenant: uuid.UUID, transaction_event: Any) -> None:
    await ingest_events(uow_factory, Caller(tenant, "x", "graphql"), [transaction_event()])


async def test_the_app_role_cannot_change_a_stored_event(
    app_engine: AsyncEngine, uow_factory: Any, tenant: uuid.UUID, transaction_event: Any
) -> None:
    await _one_event(uow_factory, tenant, transaction_event)

    async with app_engine.connect() as connection:
        await connection.execute(SET_TENANT, {"t": str(tenant)})
        with pytest.raises(DBAPIError, match="permission denied"):
            await connection.execute(text("UPDATE events SET amount = 0.01"))
        await connection.rollback()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE outbox SET tenant_id = gen_random_uuid()",
        "UPDATE outbox SET envelope = '{}'::jsonb",
    ],
)
async def test_the_relay_role_changes_only_delivery_columns(
    relay_engine: AsyncEngine,
    uow_factory: Any,
    tenant: uuid.UUID,
    transaction_event: Any,
    statement: str,
) -> None:
    await _one_event(uow_factory, tenant, transaction_event)

    async with relay_engine.connect() as connection:
        with pytest.raises(DBAPIError, match="permission denied"):
            await connection.execute(text(f"{statement} WHERE tenant_id = :t"), {"t": tenant})
        await connection.rollback()


async def test_the_relay_role_deletes_only_published_rows(
    relay_engine: AsyncEngine, uow_factory: Any, tenant: uuid.UUID, transaction_event: Any
) -> None:
    await _one_event(uow_factory, tenant, transaction_event)

    async with relay_engine.connect() as connection:
        pending = await connection.execute(
            text("DELETE FROM outbox WHERE tenant_id = :t AND published_at IS NULL"),
            {"t": tenant},
        )
        assert pending.rowcount == 0
        await connection.rollback()


_FORGED_RECORD = text(
    "INSERT INTO audit_records (tenant_id, seq, record_id, recorded_at, actor,"
    " action, entity_type, entity_id, details, prev_hash, hash)"
    " VALUES (:t, 1000, gen_random_uuid(), :at, 'mallory', 'x', 'x', 'x',"
    " '{}', decode(repeat('00', 32), 'hex'), decode(repeat('00', 32), 'hex'))"
)


@pytest.mark.parametrize(
    "statement",
    [
        _FORGED_RECORD,
        text("UPDATE audit_heads SET last_seq = last_seq + 1"),
    ],
)
async def test_the_app_role_reaches_the_chain_only_through_the_sealing_function(
    app_engine: AsyncEngine, tenant: uuid.UUID, statement: Any
) -> None:
    async with app_engine.connect() as connection:
        await connection.execute(SET_TENANT, {"t": str(tenant)})
        with pytest.raises(DBAPIError, match="permission denied"):
            await connection.execute(statement, {"t": tenant, "at": datetime.now(UTC)})
        await connection.rollback()


async def test_an_audit_record_must_carry_the_time_it_is_written(
    owner_engine: AsyncEngine, tenant: uuid.UUID
) -> None:
    # The owner may still insert (migrations and repairs run as the owner); the trigger
    # holds for every role.
    async with owner_engine.connect() as connection:
        with pytest.raises(DBAPIError, match="written at the time it records"):
            await connection.execute(
                _FORGED_RECORD, {"t": tenant, "at": datetime(2020, 1, 1, tzinfo=UTC)}
            )
        await connection.rollback()


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("last_seq = 0", "only moves forward"),
        ("last_seq = last_seq + 5", "existing record"),
    ],
)
async def test_the_chain_head_moves_only_forward_onto_a_record(
    owner_engine: AsyncEngine, tenant: uuid.UUID, assignment: str, message: str
) -> None:
    async with owner_engine.connect() as connection:
        with pytest.raises(DBAPIError, match=message):
            await connection.execute(
                text(f"UPDATE audit_heads SET {assignment} WHERE tenant_id = :t"), {"t": tenant}
            )
        await connection.rollback()


async def test_an_older_event_never_overwrites_what_a_newer_one_said(
    owner_engine: AsyncEngine, uow_factory: Any, tenant: uuid.UUID
) -> None:
    def kyc(key: str, when: str, **attributes: Any) -> dict[str, Any]:
        return {
            "idempotencyKey": key,
            "type": "kyc.updated",
            "occurredAt": when,
            "data": {"subject": {"kind": "customer", "ref": "CUST-1"}, "attributes": attributes},
        }

    caller = Caller(tenant, "kyc-system", "graphql")
    await ingest_events(
        uow_factory,
        caller,
        [kyc("new", "2026-11-30T00:00:00Z", riskRating="high", sanctionsHit=True)],
    )
    await ingest_events(
        uow_factory,
        caller,
        [
            kyc(
                "old",
                "2020-01-01T00:00:00Z",
                riskRating="low",
                sanctionsHit=False,
                segment="retail",
            )
        ],
    )

    async with owner_engine.connect() as connection:
        attributes = (
            await connection.execute(
                text("SELECT attributes FROM subjects WHERE tenant_id = :t"), {"t": tenant}
            )
        ).scalar_one()
    assert attributes == {"riskRating": "high", "sanctionsHit": True, "segment": "retail"}
