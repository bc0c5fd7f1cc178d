"""Getting every accepted event scored, whatever happened to its job.

The reconciler finds events accepted more than a deadline ago that have neither an
assessment nor a recorded failure, and enqueues them again. It covers what the queue
cannot: a job whose worker was killed (it would otherwise wait for arq's in-progress key
to expire), jobs lost with Redis's data, and a dispatch that never happened. It skips an
event whose job is waiting in the queue, alone or in a batch, so that a backlog is not
doubled. The dispatcher runs a pass every ``reconcile_interval_seconds``; ``vigil
reconcile`` runs one.

An operator's re-drive (``vigil redrive``) is for events marked failed, once the cause
is fixed: it clears their failures, records who re-drove them in the audit trail, and
enqueues them. Both use job ids of their own (see :mod:`adapters.score_queue`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from datetime import timedelta

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.metrics import SCORING_REDRIVEN
from adapters.score_queue import (
    batch_markers,
    enqueue_score,
    job_id,
    operator_job_id,
    reconciler_job_id,
    waiting,
)
from adapters.scoring_backlog import (
    ScoringFailure,
    Unassessed,
    failures,
    take_failures,
    unassessed_events,
    unassessed_events_of,
)
from adapters.settings import Settings
from adapters.unit_of_work import SqlUnitOfWork
from domain.audit import AuditEntry
from domain.ids import new_id
from workers.periodic import every

log = logging.getLogger(__name__)

# Re-drive ids change once per period, so that a re-drive whose own worker died is not
# refused for longer than that.
MIN_PERIOD_SECONDS = 60.0
ENQUEUE_CONCURRENCY = 50
MAX_REDRIVE = 10_000
CHECK_SLICE = 500


class Reconciler:
    def __init__(
        self,
        engine: AsyncEngine,
        redis: ArqRedis,
        *,
        deadline: timedelta,
        lookback: timedelta,
        batch_size: int,
        interval_seconds: float,
    ) -> None:
        self._engine = engine
        self._redis = redis
        self._deadline = deadline
        self._lookback = lookback
        self._batch_size = batch_size
        self._interval_seconds = interval_seconds
        self._period_seconds = max(interval_seconds, MIN_PERIOD_SECONDS)

    @classmethod
    def from_settings(cls, settings: Settings, engine: AsyncEngine, redis: ArqRedis) -> Reconciler:
        return cls(
            engine,
            redis,
            deadline=timedelta(seconds=settings.reconcile_deadline_seconds),
            lookback=timedelta(hours=settings.reconcile_lookback_hours),
            batch_size=settings.reconcile_batch_size,
            interval_seconds=settings.reconcile_interval_seconds,
        )

    async def run_once(self, tenant_id: uuid.UUID | None = None) -> int:
        """One pass over every tenant (or one); return how many events were enqueued.
        Raise :class:`~domain.errors.TransientFailure` when the database or Redis is
        away."""
        overdue = await self._overdue(tenant_id)
        if not overdue:
            return 0
        period = int(time.time() // self._period_seconds)
        # In slices, so that a pass over a long backlog holds a slice's ids, replies and
        # tasks at a time rather than all of them.
        due = enqueued = 0
        for start in range(0, len(overdue), CHECK_SLICE):
            slice_due, slice_enqueued = await self._redrive(
                overdue[start : start + CHECK_SLICE], period
            )
            due += slice_due
            enqueued += slice_enqueued
        SCORING_REDRIVEN.labels("reconciler").inc(enqueued)
        log.info(
            "unassessed events enqueued again",
            extra={
                "overdue": len(overdue),
                "already_waiting": len(overdue) - due,
                "enqueued": enqueued,
                "tenant_id": str(tenant_id) if tenant_id else None,
            },
        )
        return enqueued

    async def _redrive(self, overdue: Sequence[Unassessed], period: int) -> tuple[int, int]:
        """Enqueue those of ``overdue`` whose job is not waiting; return how many were due
        and how many were enqueued."""
        # An event's job may wait under its own id, under last period's re-drive id, or
        # as one of a batch (the dispatcher's): any of them waiting will score it.
        batches = await batch_markers(
            self._redis, [(item.tenant_id, item.event_id) for item in overdue]
        )
        candidates = [
            name
            for item, batch in zip(overdue, batches, strict=True)
            for name in (
                job_id(item.tenant_id, item.event_id),
                reconciler_job_id(item.tenant_id, item.event_id, period - 1),
                batch or job_id(item.tenant_id, item.event_id),
            )
        ]
        flags = await waiting(self._redis, candidates)
        due = [
            item
            for item, a, b, c in zip(overdue, flags[::3], flags[1::3], flags[2::3], strict=True)
            if not (a or b or c)
        ]

        slots = asyncio.Semaphore(ENQUEUE_CONCURRENCY)

        async def enqueue(item: Unassessed) -> bool:
            async with slots:
                return await enqueue_score(
                    self._redis,
                    item.tenant_id,
                    item.event_id,
                    job=reconciler_job_id(item.tenant_id, item.event_id, period),
                )

        enqueued = sum(await asyncio.gather(*(enqueue(item) for item in due)))
        return len(due), enqueued

    async def run(self, stop: asyncio.Event) -> None:
        """A pass every interval until ``stop`` is set (none when the interval is 0)."""
        await every(self._interval_seconds, stop, self.run_once, name="reconcile")

    async def _overdue(self, tenant_id: uuid.UUID | None) -> list[Unassessed]:
        deadline, lookback, limit = self._deadline, self._lookback, self._batch_size
        if tenant_id is None:
            return await unassessed_events(
                self._engine, deadline=deadline, lookback=lookback, max_rows=limit
            )
        async with SqlUnitOfWork(self._engine, tenant_id) as uow:
            events = await unassessed_events_of(
                uow.connection, tenant_id, deadline=deadline, lookback=lookback, max_rows=limit
            )
        return [Unassessed(tenant_id, event_id) for event_id in events]


# -- failed events, for operators ----------------------------------------------------------


async def list_failures(
    engine: AsyncEngine, tenant_id: uuid.UUID, *, max_rows: int = 1000
) -> list[ScoringFailure]:
    async with SqlUnitOfWork(engine, tenant_id) as uow:
        return await failures(uow.connection, tenant_id, max_rows=max_rows)


async def redrive(
    engine: AsyncEngine,
    redis: ArqRedis,
    tenant_id: uuid.UUID,
    *,
    actor: str,
    event_id: uuid.UUID | None = None,
    max_rows: int = MAX_REDRIVE,
) -> list[uuid.UUID]:
    """Enqueue the tenant's failed events again (or the one event, failed or not), clearing
    their failures; return the events enqueued. Raise LookupError for an unknown event.

    The failures are deleted, the jobs enqueued, then the deletion committed: a job that
    fails again at once waits for that commit and then records its new failure, and if
    enqueueing fails, the failures stay as they were."""
    async with SqlUnitOfWork(engine, tenant_id) as uow:
        taken = await take_failures(uow.connection, tenant_id, event_id=event_id, max_rows=max_rows)
        previous = {failure.event_id: failure for failure in taken}
        events: Sequence[uuid.UUID] = list(previous)
        if event_id is not None and not previous:
            if await uow.scoring.load_event(event_id) is None:
                raise LookupError(f"no event {event_id}")
            events = [event_id]

        for event in events:
            failure = previous.get(event)
            details = (
                {"previousReason": failure.reason, "attempts": failure.attempts} if failure else {}
            )
            uow.record(
                AuditEntry(new_id(), actor, "scoring.redriven", "event", str(event), None, details)
            )
        for event in events:
            _ = await enqueue_score(redis, tenant_id, event, job=operator_job_id(tenant_id, event))
        await uow.commit()

    SCORING_REDRIVEN.labels("operator").inc(len(events))
    log.info(
        "failed events re-driven",
        extra={"tenant_id": str(tenant_id), "count": len(events), "actor": actor},
    )
    return list(events)
