"""Helpers for the case review tests: cases opened the way production opens them (an
alerting event ingested and scored), actors, and what the database holds, read as the
owner (which row-level security does not limit)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.cel_rules import CachedScorers
from domain.case_workflow import ANALYST, SUPERVISOR, Actor
from domain.cases import Disposition
from domain.ports import UnitOfWorkFactory
from services import cases
from services.case_steps import Command
from services.scoring import score_event
from tests.integration.scoring_support import activate_default_ruleset, alerting, ingest

SCORERS = CachedScorers()


def analyst(name: str) -> Actor:
    return Actor(name, frozenset({ANALYST}))


def supervisor(name: str) -> Actor:
    return Actor(name, frozenset({SUPERVISOR}))


def command(
    tenant: uuid.UUID,
    actor: Actor,
    case_id: uuid.UUID | None = None,
    version: int | None = None,
    client_mutation_id: str | None = None,
) -> Command:
    return Command(tenant, actor, case_id, version, client_mutation_id, "corr-case-test")


async def open_cases(
    uow_factory: UnitOfWorkFactory,
    tenant: uuid.UUID,
    make_event: Callable[..., dict[str, Any]],
    count: int,
) -> list[uuid.UUID]:
    """``count`` cases, one per sending account, each opened by scoring an alert."""
    await activate_default_ruleset(uow_factory, tenant)
    events = [
        alerting(make_event, originator=f"DE{index:02d}370400440532013000")
        for index in range(count)
    ]
    event_ids = await ingest(uow_factory, tenant, events)
    for event_id in event_ids:
        await score_event(uow_factory, SCORERS, tenant, event_id)
    return await case_ids(uow_factory, tenant)


async def case_ids(uow_factory: UnitOfWorkFactory, tenant: uuid.UUID) -> list[uuid.UUID]:
    async with uow_factory(tenant) as uow:
        connection = uow.connection  # type: ignore[attr-defined]
        rows = await connection.execute(text("SELECT case_id FROM cases ORDER BY opened_at"))
        return [row.case_id for row in rows]


async def as_owner(owner_engine: AsyncEngine, statement: str, **parameters: Any) -> list[Any]:
    async with owner_engine.begin() as connection:
        result = await connection.execute(text(statement), parameters)
        return list(result) if result.returns_rows else []


async def as_app(
    app_engine: AsyncEngine, tenant: uuid.UUID, statement: str, **parameters: Any
) -> None:
    """Run ``statement`` as the application role in the tenant, as a fault of the
    application would, outside every check of the domain."""
    async with app_engine.connect() as connection, connection.begin():
        await connection.execute(
            text("SELECT set_config('vigil.tenant_id', :t, true)"), {"t": str(tenant)}
        )
        await connection.execute(text(statement), parameters)


async def outbox_types(owner_engine: AsyncEngine, tenant: uuid.UUID) -> list[str]:
    rows = await as_owner(
        owner_engine,
        "SELECT message_type FROM outbox WHERE tenant_id = :t AND message_type LIKE 'case.%'"
        " ORDER BY seq",
        t=tenant,
    )
    return [row.message_type for row in rows]


async def audit_of_case(
    owner_engine: AsyncEngine, tenant: uuid.UUID, case_id: uuid.UUID
) -> list[tuple[str, str]]:
    """The case's audit trail: (action, actor) in chain order."""
    rows = await as_owner(
        owner_engine,
        "SELECT action, actor FROM audit_records WHERE tenant_id = :t AND entity_type = 'case'"
        " AND entity_id = :c ORDER BY seq",
        t=tenant,
        c=str(case_id),
    )
    return [(row.action, row.actor) for row in rows]


async def close_case(uow_factory: UnitOfWorkFactory, tenant: uuid.UUID, case_id: uuid.UUID) -> None:
    """Take a new case along the review path to closed: claimed, proposed, approved."""
    claimed = await cases.claim_case(uow_factory, command(tenant, analyst("ana"), case_id, 1))
    proposed = await cases.propose_disposition(
        uow_factory,
        command(tenant, analyst("ana"), case_id, claimed.case.version),
        Disposition.FALSE_POSITIVE,
        "a known supplier",
    )
    await cases.approve_disposition(
        uow_factory, command(tenant, supervisor("sam"), case_id, proposed.case.version)
    )


async def assign_case(
    uow_factory: UnitOfWorkFactory, tenant: uuid.UUID, case_id: uuid.UUID, assignee: str
) -> None:
    """Give a new case to ``assignee``, as a supervisor does."""
    await cases.assign_case(uow_factory, command(tenant, supervisor("sam"), case_id, 1), assignee)
