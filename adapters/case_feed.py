"""The case changes of a tenant, read from its audit chain (see
:mod:`domain.review_queue`).

The reads run in the unit of work's transaction, so row-level security scopes them to its
tenant. They use the partial index ``audit_records_case_feed`` (revision 0008), which
holds only the records of cases: the many other records of a tenant (one per assessed
event, say) are never scanned to find them.
"""

from __future__ import annotations

import uuid

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters import tables
from adapters.database import translate_errors
from domain.review_queue import CASE_CHANGE_PREFIX, CASE_ENTITY, CaseChange

_records = tables.audit_records
_CHANGES = (
    select(
        _records.c.seq,
        _records.c.action,
        _records.c.entity_id,
        _records.c.recorded_at,
        _records.c.details,
    )
    .where(
        _records.c.tenant_id == bindparam("tenant"),
        _records.c.entity_type == CASE_ENTITY,
        _records.c.seq > bindparam("after"),
        _records.c.seq <= bindparam("up_to"),
        _records.c.action.startswith(CASE_CHANGE_PREFIX, autoescape=True),
    )
    .order_by(_records.c.seq)
    .limit(bindparam("limit"))
)
_HEAD = select(tables.audit_heads.c.last_seq).where(
    tables.audit_heads.c.tenant_id == bindparam("tenant")
)
# Positions are bigint; this is past any the chain will reach.
_END = 2**62


class SqlCaseFeed:
    def __init__(self, connection: AsyncConnection, tenant_id: uuid.UUID) -> None:
        self._connection = connection
        self._tenant_id = tenant_id

    async def head(self) -> int:
        with translate_errors():
            value = (await self._connection.execute(_HEAD, {"tenant": self._tenant_id})).scalar()
        return int(value or 0)

    async def changes_after(
        self, position: int, *, up_to: int | None, limit: int
    ) -> list[CaseChange]:
        parameters = {
            "tenant": self._tenant_id,
            "after": position,
            "up_to": _END if up_to is None else up_to,
            "limit": limit,
        }
        with translate_errors():
            rows = (await self._connection.execute(_CHANGES, parameters)).all()
        return [
            CaseChange(
                position=row.seq,
                change_type=row.action,
                case_id=row.entity_id,
                recorded_at=row.recorded_at,
                data=row.details if isinstance(row.details, dict) else {},
            )
            for row in rows
        ]
