"""Flagging cases past their SLA due time, each once, with ``case.sla_breached``.

The dispatcher runs a pass every ``sla_sweep_interval_seconds`` beside the reconciler
(both need only the database, and the dispatcher is long-lived); ``vigil sla`` runs one
pass. Several dispatchers may sweep at once: each tenant's pass skips the cases another
holds, and a case flagged by one no longer matches for the others, so a breach is
emitted once (see :func:`services.cases.flag_sla_breaches`).
"""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.case_backlog import tenants_with_sla_due
from adapters.metrics import CASE_SLA_BREACHES
from adapters.settings import Settings
from adapters.unit_of_work import unit_of_work_factory
from services.cases import flag_sla_breaches
from workers.periodic import every

MAX_TENANTS_PER_PASS = 1000


class SlaSweeper:
    def __init__(self, engine: AsyncEngine, *, interval_seconds: float, batch_size: int) -> None:
        self._engine = engine
        self._uow_factory = unit_of_work_factory(engine)
        self._interval_seconds = interval_seconds
        self._batch_size = batch_size

    @classmethod
    def from_settings(cls, settings: Settings, engine: AsyncEngine) -> SlaSweeper:
        return cls(
            engine,
            interval_seconds=settings.sla_sweep_interval_seconds,
            batch_size=settings.sla_sweep_batch_size,
        )

    async def run_once(self, tenant_id: uuid.UUID | None = None) -> int:
        """One pass over every tenant with cases due (or one tenant); return how many
        cases were flagged."""
        if tenant_id is None:
            tenants = await tenants_with_sla_due(self._engine, max_rows=MAX_TENANTS_PER_PASS)
        else:
            tenants = [tenant_id]
        flagged = 0
        for tenant in tenants:
            flagged += await flag_sla_breaches(self._uow_factory, tenant, max_rows=self._batch_size)
        CASE_SLA_BREACHES.inc(flagged)
        return flagged

    async def run(self, stop: asyncio.Event) -> None:
        """A pass every interval until ``stop`` is set (none when the interval is 0)."""
        await every(self._interval_seconds, stop, self.run_once, name="sla-sweep")
