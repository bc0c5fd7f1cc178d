"""Tenant administration, done as the owner role (tenants are created by operators)."""

from __future__ import annotations

import uuid

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters import audit_trail, tables
from domain.audit import AuditEntry
from domain.ids import new_id

_SET_TENANT = text("SELECT set_config('vigil.tenant_id', :tenant, true)")


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
    async with owner_engine.begin() as connection:
        await connection.execute(_SET_TENANT, {"tenant": str(tenant_id)})
        await connection.execute(
            tables.tenants.insert().values(tenant_id=tenant_id, slug=slug, name=name)
        )
        # The head starts at the genesis (the column defaults); sealing moves it.
        await connection.execute(tables.audit_heads.insert().values(tenant_id=tenant_id))
        await audit_trail.append(connection, [entry])
    return tenant_id


async def find_tenant(owner_engine: AsyncEngine, slug: str) -> uuid.UUID | None:
    async with owner_engine.connect() as connection:
        row = (
            await connection.execute(
                select(tables.tenants.c.tenant_id).where(tables.tenants.c.slug == slug)
            )
        ).first()
    return row.tenant_id if row else None
