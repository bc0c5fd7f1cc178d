"""Reading and verifying a tenant's audit chain."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters import tables
from domain.audit import AuditEntry, AuditRecord, verify_chain

_PAGE = 5000


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
            )
        if len(rows) < _PAGE:
            return
        after = rows[-1].seq


async def verify(connection: AsyncConnection, tenant_id: uuid.UUID) -> int:
    """Verify the whole chain; return the number of records, or raise AuditChainBroken."""
    collected = [record async for record in records(connection, tenant_id)]
    return verify_chain(collected)
