"""Read the case changes a review-queue subscriber needs: what it missed after a
cursor, and what is new since the portal last looked. One read transaction each, in the
tenant's own session."""

from __future__ import annotations

import uuid

from domain.ports import UnitOfWorkFactory
from domain.review_queue import CaseChange, CatchUp, Cursor, InvalidCursor


async def queue_head(uow_factory: UnitOfWorkFactory, tenant_id: uuid.UUID) -> Cursor:
    """The tenant's position now: a subscriber starting here sees only what follows."""
    async with uow_factory(tenant_id) as uow:
        return Cursor(await uow.case_feed.head())


async def changes_since(
    uow_factory: UnitOfWorkFactory, tenant_id: uuid.UUID, after: Cursor, *, limit: int
) -> list[CaseChange]:
    """Up to ``limit`` case changes after ``after``, oldest first."""
    async with uow_factory(tenant_id) as uow:
        return await uow.case_feed.changes_after(after.position, up_to=None, limit=limit)


async def catch_up(
    uow_factory: UnitOfWorkFactory, tenant_id: uuid.UUID, after: Cursor, *, limit: int
) -> CatchUp:
    """What a subscriber missed after ``after``, if it is at most ``limit`` changes.

    The changes are read up to the head read first in the same transaction, so that
    ``complete`` means every change up to ``head`` is in ``changes``. A cursor beyond
    the head was never given by this tenant's queue and is refused.
    """
    async with uow_factory(tenant_id) as uow:
        head = await uow.case_feed.head()
        if after.position > head:
            raise InvalidCursor("the cursor is not one this queue gave")
        changes = await uow.case_feed.changes_after(after.position, up_to=head, limit=limit + 1)
    return CatchUp(changes[:limit], Cursor(head), complete=len(changes) <= limit)
