"""Which tenants have cases past their SLA, read across tenants through
``vigil_sla_due_tenants`` (a SECURITY DEFINER function, migration 0006): the sweep then
works in each tenant's unit of work, under row-level security."""

from __future__ import annotations

import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.database import translate_errors

_DUE_TENANTS = text("SELECT tenant_id FROM vigil_sla_due_tenants(:max_rows)")


async def tenants_with_sla_due(engine: AsyncEngine, *, max_rows: int) -> list[uuid.UUID]:
    with translate_errors():
        async with engine.connect() as connection:
            rows = await connection.execute(_DUE_TENANTS, {"max_rows": max_rows})
            return [row.tenant_id for row in rows]
