"""The database seals audit records (``vigil_append_audit``, then the commit) exactly as
Python verifies them, alone, after records of the older scheme, and under concurrent
writers; and it seals them at the commit, so an open transaction blocks no other."""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters import audit_trail, tables
from adapters.database import make_engine
from domain.audit import AuditEntry, seal
from domain.canonical import jsonb_text, plain_json
from domain.errors import AuditChainBroken
from domain.ids import new_id

ADMIN_URL = os.environ.get(
    "VIGIL_ADMIN_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
SET_TENANT = text("SELECT set_config('vigil.tenant_id', :t, true)")

TRICKY: list[Any] = [
    {"bb": 1, "a": 2, "é": 3, "ab": 4, "b": 5, "€": 6, "zz": 7, "Z": 8},
    {"s": "q\"b\\n\n\t\r\b\f\x01\x1f\x7f ü € 𝄞 \u2028 <>&'"},
    {"n": [0, -1, 10**30, 123456789012345678], "t": True, "f": False, "z": None},
    {"deep": {"x": [{"b": [], "a": {}}, [[]], ""], "": "empty key"}},
    {},
    {"amount": "10.50", "key": "with spaces", "emoji😀": "😀"},
]


@pytest.mark.parametrize("value", TRICKY)
async def test_python_writes_jsonb_text_as_postgresql_does(
    app_engine: AsyncEngine, value: Any
) -> None:
    async with app_engine.connect() as connection:
        written = (
            await connection.execute(
                text("SELECT CAST(CAST(:v AS text) AS jsonb)::text"), {"v": plain_json(value)}
            )
        ).scalar_one()

    assert written == jsonb_text(value)


def _entry(details: Any, correlation_id: str | None = "c-1") -> AuditEntry:
    return AuditEntry(
        new_id(), 'ünïcode "actor"', "test.sealed", "thing", "x\ny", correlation_id, details
    )


async def test_records_the_database_seals_verify_in_python(
    app_engine: AsyncEngine, owner_engine: AsyncEngine, tenant: uuid.UUID
) -> None:
    entries = [_entry(value) for value in TRICKY] + [_entry({"n": 1}, correlation_id=None)]
    async with app_engine.begin() as connection:
        await connection.execute(SET_TENANT, {"t": str(tenant)})
        await audit_trail.append(connection, entries)

    async with owner_engine.connect() as connection:
        assert await audit_trail.verify(connection, tenant) == 1 + len(entries)
        schemes = (
            await connection.execute(
                text("SELECT DISTINCT hash_scheme FROM audit_records WHERE tenant_id = :t"),
                {"t": tenant},
            )
        ).scalars()
        assert set(schemes) == {2}


async def test_a_chain_begun_under_the_older_scheme_goes_on_and_verifies(
    app_engine: AsyncEngine, owner_engine: AsyncEngine, tenant: uuid.UUID
) -> None:
    async with owner_engine.begin() as connection:
        head = (
            await connection.execute(
                text("SELECT last_seq, last_hash FROM audit_heads WHERE tenant_id = :t"),
                {"t": tenant},
            )
        ).one()
        older = seal(
            tenant,
            [_entry({"n": i}) for i in range(3)],
            last_seq=head.last_seq,
            last_hash=bytes(head.last_hash),
            recorded_at=(await connection.execute(text("SELECT now()"))).scalar_one(),
            scheme=1,
        )
        # As the application wrote records before the database sealed them.
        await connection.execute(
            tables.audit_records.insert(),
            [
                {
                    "tenant_id": tenant,
                    "seq": record.seq,
                    "record_id": record.entry.record_id,
                    "recorded_at": record.recorded_at,
                    "actor": record.entry.actor,
                    "action": record.entry.action,
                    "entity_type": record.entry.entity_type,
                    "entity_id": record.entry.entity_id,
                    "correlation_id": record.entry.correlation_id,
                    "details": dict(record.entry.details),
                    "prev_hash": record.prev_hash,
                    "hash": record.hash,
                    "hash_scheme": 1,
                }
                for record in older
            ],
        )
        await connection.execute(
            text("UPDATE audit_heads SET last_seq = :s, last_hash = :h WHERE tenant_id = :t"),
            {"s": older[-1].seq, "h": older[-1].hash, "t": tenant},
        )
    async with app_engine.begin() as connection:
        await connection.execute(SET_TENANT, {"t": str(tenant)})
        await audit_trail.append(connection, [_entry({"n": 3}), _entry({"n": 4})])

    async with owner_engine.connect() as connection:
        assert await audit_trail.verify(connection, tenant) == 1 + 3 + 2
        schemes = (
            await connection.execute(
                text("SELECT hash_scheme FROM audit_records WHERE tenant_id = :t ORDER BY seq"),
                {"t": tenant},
            )
        ).scalars()
        assert list(schemes) == [2, 1, 1, 1, 2, 2]


@pytest.mark.parametrize(
    "change", ["details = '{\"n\": 2}'", "hash_scheme = 1", "correlation_id = NULL"]
)
async def test_a_sealed_record_changed_behind_the_triggers_is_detected(
    app_engine: AsyncEngine, owner_engine: AsyncEngine, tenant: uuid.UUID, change: str
) -> None:
    async with app_engine.begin() as connection:
        await connection.execute(SET_TENANT, {"t": str(tenant)})
        await audit_trail.append(connection, [_entry({"n": i}) for i in range(3)])
    superuser = make_engine(
        ADMIN_URL.rsplit("/", 1)[0] + f"/{owner_engine.url.database}", pool_size=1
    )
    try:
        async with superuser.begin() as connection:
            await connection.execute(text("SET LOCAL session_replication_role = replica"))
            await connection.execute(
                text(f"UPDATE audit_records SET {change} WHERE tenant_id = :t AND seq = 3"),
                {"t": tenant},
            )
    finally:
        await superuser.dispose()

    async with owner_engine.connect() as connection:
        with pytest.raises(AuditChainBroken) as raised:
            await audit_trail.verify(connection, tenant)
    assert raised.value.seq == 3


async def test_concurrent_writers_of_one_tenant_leave_no_gap(
    app_engine: AsyncEngine, owner_engine: AsyncEngine, tenant: uuid.UUID
) -> None:
    async def writer(index: int) -> None:
        for round_ in range(10):
            async with app_engine.begin() as connection:
                await connection.execute(SET_TENANT, {"t": str(tenant)})
                await audit_trail.append(
                    connection, [_entry({"w": index, "r": round_, "i": i}) for i in range(3)]
                )

    await asyncio.gather(*(writer(index) for index in range(8)))

    async with owner_engine.connect() as connection:
        assert await audit_trail.verify(connection, tenant) == 1 + 8 * 10 * 3


async def test_a_transaction_without_a_tenant_cannot_seal(app_engine: AsyncEngine) -> None:
    async with app_engine.connect() as connection:
        with pytest.raises(DBAPIError, match="no tenant is set"):
            await audit_trail.append(connection, [_entry({})])
        await connection.rollback()


async def _pending_and_sealed(owner_engine: AsyncEngine, tenant: uuid.UUID) -> tuple[int, int]:
    async with owner_engine.connect() as connection:
        pending = await connection.scalar(text("SELECT count(*) FROM audit_pending"))
        sealed = await connection.scalar(
            text("SELECT last_seq FROM audit_heads WHERE tenant_id = :t"), {"t": tenant}
        )
    return int(pending or 0), int(sealed or 0)


async def test_entries_handed_over_hold_no_lock_until_the_commit(
    app_engine: AsyncEngine, owner_engine: AsyncEngine, tenant: uuid.UUID
) -> None:
    """A transaction that has handed over its entries but not yet committed (a client
    busy elsewhere) must not hold up the tenant's other writers: the head is locked in
    the commit, not before."""
    async with app_engine.connect() as slow:
        await slow.begin()
        await slow.execute(SET_TENANT, {"t": str(tenant)})
        await audit_trail.append(slow, [_entry({"slow": True})])

        async def quick() -> None:
            async with app_engine.begin() as connection:
                await connection.execute(SET_TENANT, {"t": str(tenant)})
                await connection.execute(text("SET LOCAL lock_timeout = '5s'"))
                await audit_trail.append(connection, [_entry({"quick": True})])

        await asyncio.wait_for(quick(), timeout=10)
        records = [record async for record in _records_as_owner(owner_engine, tenant)]
        assert [record.entry.details for record in records[1:]] == [{"quick": True}]
        await slow.commit()

    async with owner_engine.connect() as connection:
        assert await audit_trail.verify(connection, tenant) == 1 + 2
    assert await _pending_and_sealed(owner_engine, tenant) == (0, 3)


async def _records_as_owner(owner_engine: AsyncEngine, tenant: uuid.UUID) -> Any:
    async with owner_engine.connect() as connection:
        async for record in audit_trail.records(connection, tenant):
            yield record


async def test_what_is_rolled_back_is_never_sealed(
    app_engine: AsyncEngine, owner_engine: AsyncEngine, tenant: uuid.UUID
) -> None:
    async with app_engine.connect() as connection:
        await connection.begin()
        await connection.execute(SET_TENANT, {"t": str(tenant)})
        await audit_trail.append(connection, [_entry({"n": "dropped"})])
        await connection.rollback()

    async with app_engine.begin() as connection:
        await connection.execute(SET_TENANT, {"t": str(tenant)})
        await audit_trail.append(connection, [_entry({"n": "kept"})])
        savepoint = await connection.begin_nested()
        await audit_trail.append(connection, [_entry({"n": "rolled back to the savepoint"})])
        await savepoint.rollback()
        await audit_trail.append(connection, [_entry({"n": "kept too"})])

    records = [record async for record in _records_as_owner(owner_engine, tenant)]
    assert [record.entry.details for record in records[1:]] == [{"n": "kept"}, {"n": "kept too"}]
    assert await _pending_and_sealed(owner_engine, tenant) == (0, 3)


async def test_an_unknown_tenant_fails_the_call_not_only_the_commit(
    app_engine: AsyncEngine,
) -> None:
    async with app_engine.connect() as connection:
        await connection.execute(SET_TENANT, {"t": str(uuid.uuid4())})
        with pytest.raises(DBAPIError, match="no such tenant"):
            await audit_trail.append(connection, [_entry({})])
        await connection.rollback()


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT count(*) FROM audit_pending",
        "INSERT INTO audit_pending (tenant_id, record_ids, actors, actions, entity_types,"
        " entity_ids, correlation_ids, details) VALUES (vigil_current_tenant(), '{}', '{}',"
        " '{}', '{}', '{}', '{}', '{}')",
        "DELETE FROM audit_pending",
    ],
)
async def test_the_app_role_cannot_reach_the_queue_of_entries(
    app_engine: AsyncEngine, tenant: uuid.UUID, statement: str
) -> None:
    async with app_engine.connect() as connection:
        await connection.execute(SET_TENANT, {"t": str(tenant)})
        with pytest.raises(DBAPIError, match="permission denied"):
            await connection.execute(text(statement))
        await connection.rollback()
