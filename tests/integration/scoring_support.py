"""Helpers for the dispatch and scoring tests: a score queue of the test's own, an arq
worker run in-process, the default ruleset, events that raise an alert, and what a
tenant's scoring left behind, counted as the owner (who is not bound by RLS)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from arq import Worker
from arq.connections import ArqRedis
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.cel_rules import CachedScorers
from adapters.score_queue import connect
from adapters.settings import Settings
from domain.default_ruleset import DEFAULT_RULESET
from domain.ports import UnitOfWorkFactory
from services.ingest import Caller, Outcome, ingest_events
from services.scoring import install_ruleset
from workers.scoring import create_worker

WAIT_SECONDS = 20.0


async def eventually(
    check: Callable[[], Awaitable[bool]], *, seconds: float = WAIT_SECONDS, what: str = ""
) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reached in {seconds:.0f} s: {what}")
        await asyncio.sleep(0.05)


def scoring_settings(settings: Settings, **changes: Any) -> Settings:
    """The test settings with a score queue of its own and quick retries."""
    values: dict[str, Any] = {
        "arq_queue": f"{settings.amqp_prefix}.score.{uuid.uuid4().hex[:8]}",
        "worker_retry_seconds": 0.05,
        "worker_concurrency": 8,
        "worker_stop_grace_seconds": 0,
        "reconcile_deadline_seconds": 0.0,
    }
    values.update(changes)
    return settings.model_copy(update=values)


@contextlib.asynccontextmanager
async def score_queue(settings: Settings) -> AsyncIterator[ArqRedis]:
    """A client of the settings' score queue; the queue and every job key on it are
    deleted afterwards."""
    redis = connect(settings)
    try:
        yield redis
    finally:
        await forget_jobs(redis, settings.score_queue)
        await redis.aclose(close_connection_pool=True)


async def forget_jobs(redis: ArqRedis, queue: str) -> None:
    job_ids = [job.decode() for job in await redis.zrange(queue, 0, -1)]
    keys = [f"arq:{kind}:{job}" for job in job_ids for kind in ("job", "in-progress", "retry")]
    if keys:
        await redis.delete(*keys)
    await redis.delete(queue)


async def queued_job_ids(redis: ArqRedis, queue: str) -> list[str]:
    return sorted(job.decode() for job in await redis.zrange(queue, 0, -1))


@contextlib.asynccontextmanager
async def working(settings: Settings, **overrides: Any) -> AsyncIterator[Worker]:
    """An arq worker of the score queue, running in this process for the block."""
    options: dict[str, Any] = {"handle_signals": False, "poll_delay": 0.02}
    worker = create_worker(settings, **{**options, **overrides})
    running = asyncio.create_task(worker.async_run())
    try:
        yield worker
    finally:
        # Let a job that has committed finish its bookkeeping in Redis: closing the
        # worker cancels what is still running, and a job cancelled there leaves its
        # connections to be closed by the garbage collector, in some later test.
        await _jobs_finished(worker, seconds=10)
        with warnings.catch_warnings(), contextlib.suppress(asyncio.CancelledError):
            # arq 0.28 closes its Redis client with a call redis 5 deprecates.
            warnings.simplefilter("ignore", DeprecationWarning)
            await worker.close()
        with contextlib.suppress(asyncio.CancelledError):
            await running


async def _jobs_finished(worker: Worker, *, seconds: float) -> None:
    running = [task for task in worker.tasks.values() if not task.done()]
    if running:
        await asyncio.wait(running, timeout=seconds)


async def activate_default_ruleset(uow_factory: UnitOfWorkFactory, tenant: uuid.UUID) -> int:
    return await install_ruleset(
        uow_factory, CachedScorers(), tenant, DEFAULT_RULESET, "test", activate=True
    )


def alerting(make_event: Callable[..., dict[str, Any]], **changes: Any) -> dict[str, Any]:
    """A transfer to a high-risk country: the default ruleset raises one alert, on the
    sender."""
    event = make_event(**changes)
    event["data"]["beneficiary"]["country"] = "IR"
    return event


async def ingest(
    uow_factory: UnitOfWorkFactory, tenant: uuid.UUID, events: Sequence[Mapping[str, Any]]
) -> list[uuid.UUID]:
    caller = Caller(tenant, "core-banking", "test", f"corr-{uuid.uuid4().hex[:12]}")
    results = await ingest_events(uow_factory, caller, events)
    assert {result.outcome for result in results} == {Outcome.ACCEPTED}
    return [result.event_id for result in results if result.event_id is not None]


async def received_envelopes(owner_engine: AsyncEngine, tenant: uuid.UUID) -> list[Any]:
    """The ``event.received`` CloudEvents the tenant's ingest wrote to the outbox, as the
    relay would publish them."""
    async with owner_engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT envelope FROM outbox WHERE tenant_id = :t"
                " AND message_type = 'event.received' ORDER BY seq"
            ),
            {"t": tenant},
        )
        return [row.envelope for row in rows]


@dataclass(frozen=True)
class Effects:
    """What scoring left for a tenant: rows, audit records by action, outbox messages by
    type, and failures."""

    assessments: int
    alerts: int
    cases: int
    audit: Mapping[str, int] = field(default_factory=dict)
    outbox: Mapping[str, int] = field(default_factory=dict)
    failures: int = 0


ONE_ALERT = {
    "assessments": 1,
    "alerts": 1,
    "cases": 1,
    "audit": {"risk.assessed": 1, "alert.raised": 1, "case.opened": 1},
    "outbox": {"risk.assessed": 1, "case.opened": 1},
}


async def effects(owner_engine: AsyncEngine, tenant: uuid.UUID) -> Effects:
    async with owner_engine.connect() as connection:
        counts = (
            await connection.execute(
                text(
                    """
                    SELECT (SELECT count(*) FROM assessments WHERE tenant_id = :t),
                           (SELECT count(*) FROM alerts WHERE tenant_id = :t),
                           (SELECT count(*) FROM cases WHERE tenant_id = :t),
                           (SELECT count(*) FROM scoring_failures WHERE tenant_id = :t)
                    """
                ),
                {"t": tenant},
            )
        ).one()
        audit = await connection.execute(
            text(
                "SELECT action, count(*) FROM audit_records WHERE tenant_id = :t"
                " AND action IN ('risk.assessed', 'alert.raised', 'case.opened', 'case.updated')"
                " GROUP BY action"
            ),
            {"t": tenant},
        )
        outbox = await connection.execute(
            text(
                "SELECT message_type, count(*) FROM outbox WHERE tenant_id = :t"
                " AND message_type <> 'event.received' GROUP BY message_type"
            ),
            {"t": tenant},
        )
        return Effects(
            assessments=counts[0],
            alerts=counts[1],
            cases=counts[2],
            failures=counts[3],
            audit={row[0]: row[1] for row in audit},
            outbox={row[0]: row[1] for row in outbox},
        )


async def assessed(owner_engine: AsyncEngine, tenant: uuid.UUID) -> int:
    async with owner_engine.connect() as connection:
        count = await connection.scalar(
            text("SELECT count(*) FROM assessments WHERE tenant_id = :t"), {"t": tenant}
        )
    return int(count or 0)


@contextlib.asynccontextmanager
async def audit_head_locked(owner_engine: AsyncEngine, tenant: uuid.UUID) -> AsyncIterator[None]:
    """Hold the tenant's audit chain head, which every scoring transaction locks in its
    commit: scoring runs up to that point and waits there."""
    async with owner_engine.connect() as connection, connection.begin() as transaction:
        await connection.execute(
            text("SELECT 1 FROM audit_heads WHERE tenant_id = :t FOR UPDATE"), {"t": tenant}
        )
        try:
            yield
        finally:
            await transaction.rollback()


@contextlib.asynccontextmanager
async def assessment_held(
    owner_engine: AsyncEngine, tenant: uuid.UUID, event: uuid.UUID, version: int
) -> AsyncIterator[None]:
    """Hold an uncommitted assessment of ``event`` under ``version``: a scoring
    transaction inserting its own waits on it, mid-transaction, before its commit, and
    goes on (finding no conflict) once it is rolled back on leaving."""
    async with owner_engine.connect() as connection, connection.begin() as transaction:
        await connection.execute(
            text(
                "INSERT INTO assessments (tenant_id, assessment_id, event_id, ruleset_version,"
                " scorer, score, band, alert, explanation, context, scored_at) VALUES"
                " (:t, gen_random_uuid(), :e, :v, 'held', 0, 'low', false, '{}', '{}', now())"
            ),
            {"t": tenant, "e": event, "v": version},
        )
        try:
            yield
        finally:
            await transaction.rollback()


async def sessions_waiting_for_locks(owner_engine: AsyncEngine, application: str) -> int:
    async with owner_engine.connect() as connection:
        count = await connection.scalar(
            # pg_locks, not wait_event: another role's wait is hidden from the owner.
            text(
                "SELECT count(DISTINCT l.pid) FROM pg_locks l JOIN pg_stat_activity a"
                " ON a.pid = l.pid WHERE NOT l.granted AND a.datname = current_database()"
                " AND a.application_name = :application"
            ),
            {"application": application},
        )
    return int(count or 0)


async def sessions_of(owner_engine: AsyncEngine, application: str) -> int:
    async with owner_engine.connect() as connection:
        count = await connection.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = :application"
            ),
            {"application": application},
        )
    return int(count or 0)


class Counter:
    """A labelled Prometheus counter, read as a difference from when this was made."""

    def __init__(self, name: str, label: str) -> None:
        self._name = name
        self._label = label
        self._start: dict[str, float] = {}
        self._start = self._read()

    def _read(self) -> dict[str, float]:
        values: dict[str, float] = {}
        for metric in REGISTRY.collect():
            for sample in metric.samples:
                if sample.name == self._name:
                    values[sample.labels[self._label]] = sample.value
        return values

    def since(self) -> dict[str, int]:
        now = self._read()
        changed = {key: int(value - self._start.get(key, 0.0)) for key, value in now.items()}
        return {key: value for key, value in changed.items() if value}
