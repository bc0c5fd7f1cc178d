"""Appending to, reading and verifying a tenant's audit chain."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters import tables
from domain.audit import AuditEntry, AuditRecord, verify_chain
from domain.canonical import plain_json
from domain.errors import AuditChainBroken

_PAGE = 5000

# The database checks the entries and queues them for the commit, which locks the head,
# numbers, hashes and inserts the records and moves the head (migrations 0005 and 0010);
# the application role can do no less.
APPEND_SQL = (
    "SELECT vigil_append_audit(CAST(:record_ids AS uuid[]), CAST(:actors AS text[]),"
    " CAST(:actions AS text[]), CAST(:entity_types AS text[]), CAST(:entity_ids AS text[]),"
    " CAST(:correlation_ids AS text[]), CAST(:details AS jsonb[]))"
)
_APPEND = text(APPEND_SQL)


def append_parameters(entries: Sequence[AuditEntry]) -> dict[str, Any]:
    """The parameters of :data:`APPEND_SQL` for ``entries``."""
    return {
        "record_ids": [entry.record_id for entry in entries],
        "actors": [entry.actor for entry in entries],
        "actions": [entry.action for entry in entries],
        "entity_types": [entry.entity_type for entry in entries],
        "entity_ids": [entry.entity_id for entry in entries],
        "correlation_ids": [entry.correlation_id for entry in entries],
        "details": [plain_json(entry.details) for entry in entries],
    }


async def append(connection: AsyncConnection, entries: Sequence[AuditEntry]) -> None:
    """Have ``entries`` sealed onto the chain of the transaction's tenant, in order, when
    the transaction commits. Nothing is locked before the commit, and the transaction
    does not see the records itself."""
    await connection.execute(_APPEND, append_parameters(entries))


async def records(connection: AsyncConnection, tenant_id: uuid.UUID) -> AsyncIterator[AuditRecord]:
    """All records of a tenant in sequence order, read page by page."""
    t = tables.audit_records
    after = 0
    while True:
        rows = (
            await connection.execute(
                select(t)
                .where(t.c.tenant_id == tenant_id, t.c.seq > after)
                .order_by(t.c.seq)
                .limit(_PAGE)
            )
        ).all()
        for row in rows:
            yield AuditRecord(
                tenant_id=row.tenant_id,
                seq=row.seq,
                recorded_at=row.recorded_at,
                entry=AuditEntry(
                    record_id=row.record_id,
                    actor=row.actor,
                    action=row.action,
                    entity_type=row.entity_type,
                    entity_id=row.entity_id,
                    correlation_id=row.correlation_id,
                    details=row.details,
                ),
                prev_hash=bytes(row.prev_hash),
                hash=bytes(row.hash),
                scheme=row.hash_scheme,
            )
        if len(rows) < _PAGE:
            return
        after = rows[-1].seq


async def verify(connection: AsyncConnection, tenant_id: uuid.UUID) -> int:
    """Verify the whole chain and that it ends where the tenant's head says; return the
    number of records, or raise AuditChainBroken. (A chain cut short at its end would
    otherwise verify: the head is the witness of how long it was.)"""
    collected = [record async for record in records(connection, tenant_id)]
    count = verify_chain(collected)
    heads = tables.audit_heads
    head = (
        await connection.execute(
            select(heads.c.last_seq, heads.c.last_hash).where(heads.c.tenant_id == tenant_id)
        )
    ).first()
    last_seq, last_hash = (collected[-1].seq, collected[-1].hash) if collected else (0, b"")
    if head is None or (head.last_seq, bytes(head.last_hash)) != (last_seq, last_hash):
        raise AuditChainBroken(last_seq + 1, "the chain does not end where its head says")
    return count
