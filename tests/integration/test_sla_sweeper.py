"""The SLA sweep across tenants, as the dispatcher and `vigil sla` run it."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.tenants import create_tenant
from tests.integration.case_support import as_owner, open_cases, outbox_types
from workers.sla_sweeper import SlaSweeper

PAST_DUE = "UPDATE cases SET sla_due_at = now() - interval '1 second' WHERE tenant_id = :t"


async def test_sweepers_at_once_flag_each_tenants_breaches_once(
    uow_factory: Any,
    app_engine: AsyncEngine,
    owner_engine: AsyncEngine,
    tenant: uuid.UUID,
    transaction_event: Any,
) -> None:
    other = await create_tenant(owner_engine, f"t-{uuid.uuid4().hex[:12]}", "Other bank")
    for each in (tenant, other):
        await open_cases(uow_factory, each, transaction_event, 2)
        await as_owner(owner_engine, PAST_DUE, t=each)
    sweepers = [SlaSweeper(app_engine, interval_seconds=1, batch_size=1) for _ in range(3)]

    # A batch of one per tenant: each pass flags at most one case of each tenant.
    first = await asyncio.gather(*(sweeper.run_once() for sweeper in sweepers))
    rest = [await sweepers[0].run_once() for _ in range(3)]

    assert sum(first) + sum(rest) >= 4
    for each in (tenant, other):
        assert (await outbox_types(owner_engine, each)).count("case.sla_breached") == 2
    assert await sweepers[0].run_once(tenant) == 0


async def test_the_periodic_sweep_stops_when_asked(app_engine: AsyncEngine) -> None:
    stop = asyncio.Event()
    running = asyncio.create_task(
        SlaSweeper(app_engine, interval_seconds=0.01, batch_size=10).run(stop)
    )
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(running, 5)
