"""Tenant administration, done as the owner role (tenants are created by operators)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters import tables
from domain.audit import GENESIS, AuditEntry, seal
from domain.ids import new_id


async def create_tenant(owner_engine: AsyncEngine, slug: str, name: str) -> uuid.UUID:
    """Create a tenant with an empty audit chain whose first record is its creation."""
    tenant_id = new_id()
    entry = AuditEntry(
        record_id=new_id(),
        actor="operator",
        action="tenant.created",
        entity_type="tenant",
        entity_id=str(tenant_id),
        correlation_id=None,
        details={"slug": slug, "name": name},
    )
    (record,) = seal(
        tenant_id, [entry], last_seq=0, last_hash=GENESIS, recorded_at=datetime.now(UTC)
    )
    async with owner_engine.begin() as connection:
        await connection.execute(
            tables.tenants.insert().values(tenant_id=tenant_id, slug=slug, name=name)
        )
        await connection.execute(
            tables.audit_records.insert().values(
                tenant_id=tenant_id,
                seq=record.seq,
                record_id=entry.record_id,
                recorded_at=record.recorded_at,
                actor=entry.actor,
                action=entry.action,
                entity_type=entry.entity_type,
                entity_id=entry.entity_id,
                correlation_id=None,
                details=dict(entry.details),
                prev_hash=record.prev_hash,
                hash=record.hash,
            )
        )
        await connection.execute(
            tables.audit_heads.insert().values(
                tenant_id=tenant_id, last_seq=record.seq, last_hash=record.hash
            )
        )
    return tenant_id


async def find_tenant(owner_engine: AsyncEngine, slug: str) -> uuid.UUID | None:
    async with owner_engine.connect() as connection:
        row = (
            await connection.execute(
                select(tables.tenants.c.tenant_id).where(tables.tenants.c.slug == slug)
            )
        ).first()
    return row.tenant_id if row else None
